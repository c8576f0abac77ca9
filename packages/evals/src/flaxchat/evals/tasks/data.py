"""Rows of a data set from a local path or from the hub, with nanochat's seeded shuffle.

Local files: .jsonl, .jsonl.gz, .json (a list of objects) and .parquet, or a directory of
them (read in name order). Parquet stays in Arrow and rows are built on access, so the large
training splits (SmolTalk's 460K conversations) cost little memory.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flaxchat.evals.download import hub_parquet_files
from flaxchat.evals.errors import TaskDataError

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
SHUFFLE_SEED = 42  # nanochat shuffles every hub data set with seed 42


class ArrowRows(Sequence):
    """Rows of a pyarrow Table as dicts, built on access."""

    def __init__(self, table):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return {name: self.table.column(name)[index].as_py() for name in self.table.column_names}


class Permuted(Sequence):
    """rows[permutation[i]]."""

    def __init__(self, rows: Sequence, permutation: np.ndarray):
        self.rows, self.permutation = rows, permutation

    def __len__(self) -> int:
        return len(self.permutation)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.rows[int(self.permutation[index])]


def shuffled(rows: Sequence, seed: int = SHUFFLE_SEED) -> Sequence:
    """Same order as Hugging Face datasets' `shuffle(seed)`: numpy default_rng(seed).permutation."""
    return Permuted(rows, np.random.default_rng(seed).permutation(len(rows)))


def _data_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise TaskDataError(f"{path} holds no data files (expected {', '.join(SUFFIXES)})")
        kinds = {p.suffix for p in files}
        if len(kinds) > 1:
            raise TaskDataError(f"{path} mixes file types {sorted(kinds)}: keep one format per directory")
        return files
    if not path.exists():
        raise TaskDataError(f"{path} does not exist")
    if not path.name.endswith(SUFFIXES):
        raise TaskDataError(f"{path}: unsupported file type (expected {', '.join(SUFFIXES)} or a directory of them)")
    return [path]


def json_lines(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    values = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    values.append((number, json.loads(line)))
                except ValueError as e:
                    raise TaskDataError(f"{path}:{number}: not valid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskDataError(f"{path}: cannot read ({e})") from None
    return values


def _json_list(path: Path) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TaskDataError(f"{path}: cannot read a JSON list ({e})") from None
    if not isinstance(rows, list):
        raise TaskDataError(f"{path}: a .json data file must hold a list of rows, got {type(rows).__name__}")
    return rows


def _parquet(paths: list[Path]) -> ArrowRows:
    # Imported here: the generated tasks (spelling, arithmetic) never need pyarrow.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        tables = [pq.read_table(p) for p in paths]
        return ArrowRows(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
    except (OSError, pa.ArrowException) as e:
        raise TaskDataError(f"cannot read parquet {', '.join(map(str, paths))}: {e}") from None


def read_rows(path: str | Path) -> Sequence[dict]:
    """All rows of a local file or directory, in file order."""
    files = _data_files(Path(path).expanduser())
    if files[0].suffix == ".parquet":
        return _parquet(files)
    rows: list = []
    for f in files:
        rows.extend(_json_list(f) if f.suffix == ".json" else [value for _, value in json_lines(f)])
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TaskDataError(f"{path}: row {i} is a {type(row).__name__}, expected a JSON object")
    return rows


@dataclass(frozen=True)
class HubSplit:
    """Where a data set lives on the Hugging Face hub."""

    repo: str
    subset: str
    split: str

    def __str__(self) -> str:
        return f"{self.repo} ({self.subset}/{self.split})"


def load_rows(path: str | Path | None, hub: HubSplit, how_to_provide: str) -> tuple[Sequence[dict], str]:
    """(rows, where they came from): the local `path` when given, else the hub split (cached after one download)."""
    if path is not None:
        return read_rows(path), f"local {path}"
    return _parquet(hub_parquet_files(hub.repo, hub.subset, hub.split, how_to_provide)), f"hub {hub}"


def require_columns(rows: Sequence[dict], columns: Sequence[str], what: str) -> None:
    """Fail early and clearly when the first row lacks a column the task reads."""
    if not len(rows):
        raise TaskDataError(f"{what}: the data set is empty")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise TaskDataError(f"{what}: rows lack column(s) {missing}; found {sorted(rows[0])}")

