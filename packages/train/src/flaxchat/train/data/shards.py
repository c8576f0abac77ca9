"""Parquet shards in nanochat's format, its train/val split rule, and the generated default corpus.

A shard is `shard_{index:05d}.parquet` with one string column `text` and row
groups of 1024 documents. In a shard directory the files sorted by name are
split so that the LAST one is val and all others are train.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from flaxchat.tokenizer.paths import base_dir
from flaxchat.train.data import stories
from flaxchat.train.data.errors import DataSourceError

logger = logging.getLogger(__name__)

TEXT_COLUMN = "text"
ROW_GROUP_SIZE = 1024
SPLITS = ("train", "val")

DEFAULT_TRAIN_SHARDS = 4
DEFAULT_DOCS_PER_SHARD = 5120
DEFAULT_TRAIN_SEED = 20240101
DEFAULT_VAL_SEED = 20240102  # a different seed, so val stories are not train stories
MANIFEST = "corpus.json"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataSourceError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def write_shard(path: Path, texts: Sequence[str]) -> None:
    """Write `texts` as a shard at `path`, atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({TEXT_COLUMN: pa.array(texts, type=pa.string())})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_shards(directory: Path) -> list[Path]:
    """The `*.parquet` files of `directory`, sorted by name (partial downloads end in `.tmp`, so never match)."""
    return sorted(p for p in Path(directory).glob("*.parquet") if p.is_file())


def split_shards(files: Sequence[Path], split: str) -> list[Path]:
    """nanochat's rule: the last file is val, all others are train."""
    check_split(split)
    if len(files) < 2:
        where = f" in {files[0].parent}" if files else ""
        raise DataSourceError(
            f"a shard directory needs at least 2 parquet files (train shards, then the val shard last); "
            f"found {len(files)}{where}"
        )
    return list(files[:-1]) if split == "train" else [files[-1]]


def open_text_parquet(path: Path) -> pq.ParquetFile:
    """Open a parquet file and check it has a string `text` column."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataSourceError(f"{path} is not a readable parquet file: {e}") from None
    schema = pf.schema_arrow
    index = schema.get_field_index(TEXT_COLUMN)
    if index < 0:
        raise DataSourceError(f"{path} has no {TEXT_COLUMN!r} column (it has: {', '.join(schema.names)})")
    kind = schema.field(index).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataSourceError(f"{path}: column {TEXT_COLUMN!r} holds {kind}, not strings")
    return pf


def read_row_group(pf: pq.ParquetFile, index: int) -> list[str]:
    """The documents of row group `index` of a file opened with `open_text_parquet`."""
    return pf.read_row_group(index, columns=[TEXT_COLUMN]).column(0).to_pylist()


def iter_row_groups(path: Path) -> Iterator[list[str]]:
    """The documents of a parquet file, one row group at a time (a whole file is never loaded)."""
    pf = open_text_parquet(path)
    for i in range(pf.num_row_groups):
        yield read_row_group(pf, i)


# ------------------------------------------------------ generated default corpus


def default_corpus_dir() -> Path:
    return base_dir() / "data" / "default_stories"


def _manifest(num_train_shards: int, docs_per_shard: int) -> dict:
    return {
        "what": "synthetic children's stories from flaxchat's story generator; not a real data set",
        "generator_version": stories.GENERATOR_VERSION,
        "train_seed": DEFAULT_TRAIN_SEED,
        "val_seed": DEFAULT_VAL_SEED,
        "num_train_shards": num_train_shards,
        "docs_per_shard": docs_per_shard,
    }


def _is_complete(directory: Path, manifest: dict) -> bool:
    try:
        written = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    expected = [directory / shard_name(i) for i in range(manifest["num_train_shards"] + 1)]
    return written == manifest and list_shards(directory) == expected


def _write_corpus(directory: Path, manifest: dict) -> None:
    train = stories.iter_stories(manifest["train_seed"])
    for i in range(manifest["num_train_shards"]):
        write_shard(directory / shard_name(i), list(islice(train, manifest["docs_per_shard"])))
    val = stories.generate_stories(manifest["val_seed"], manifest["docs_per_shard"])
    write_shard(directory / shard_name(manifest["num_train_shards"]), val)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def ensure_default_corpus(
    num_train_shards: int = DEFAULT_TRAIN_SHARDS, docs_per_shard: int = DEFAULT_DOCS_PER_SHARD
) -> Path:
    """Make sure the generated default corpus exists in `default_corpus_dir()` and return that directory.

    Train shards 0..n-1 come from one seed, the val shard (index n, the last
    file) from another. A corpus made with other sizes or by another generator
    version is replaced. The whole directory appears at once: it is written
    beside the target and renamed into place.
    """
    if num_train_shards < 1 or docs_per_shard < 1:
        raise ValueError("num_train_shards and docs_per_shard must be at least 1")
    target = default_corpus_dir()
    manifest = _manifest(num_train_shards, docs_per_shard)
    if _is_complete(target, manifest):
        return target
    total = (num_train_shards + 1) * docs_per_shard
    logger.info(
        "Generating the embedded default corpus: %d synthetic children's stories written by flaxchat's "
        "story generator (NOT real data) into %s. For real text pass --data PATH, 'tinystories' or 'climbmix'.",
        total,
        target,
    )
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.", suffix=".tmp"))
    try:
        _write_corpus(staging, manifest)
        if _is_complete(target, manifest):  # another process finished first
            return target
        if target.exists():
            stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.stale.", suffix=".tmp"))
            os.replace(target, stale / target.name)
            shutil.rmtree(stale)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "Default corpus ready: %d train shards + 1 val shard of %d stories each, in %.1f s",
        num_train_shards,
        docs_per_shard,
        time.perf_counter() - start,
    )
    return target
