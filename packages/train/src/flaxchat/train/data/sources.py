"""Where pretraining documents come from: one spec string names a source and a split picks its part.

Specs:
  None            the embedded default: generated children's stories (see stories.py),
                  made on first use under <base>/data/default_stories.
  "climbmix"      nanochat's ClimbMix shards under <base>/data/climbmix: the shards already
                  there, or the first DEFAULT_CLIMBMIX_SHARDS train shards + val if none are.
  "climbmix:N"    exactly train shards 0..N-1 and the val shard, downloading what is missing.
  "tinystories"   TinyStories-train.txt / TinyStories-valid.txt under <base>/data/tinystories,
                  downloaded if missing.
  PATH or GLOB    local .parquet (a string `text` column), .txt (documents separated by lines
                  `<|endoftext|>` if the file has any, else by blank lines) or .jsonl (an object
                  with a string `text` field per line) files; a directory means the supported
                  files in it. A local file named like a source above is reached as ./climbmix.

Splits of local files: with 2 or more files, nanochat's rule (sorted by path,
the last file is val, the rest train). With a single file, documents 0, 100,
200, ... (every HOLDOUT_EVERY-th, starting with the first) are val and all
others train, so the two splits are disjoint and together cover the file.

Everything streams: parquet row group by row group, text files line by line.
"""

import glob
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from flaxchat.train.data.download import END_OF_TEXT, climbmix_dir, download_shards, download_tinystories
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import check_split, ensure_default_corpus, iter_row_groups, list_shards, split_shards

logger = logging.getLogger(__name__)

HOLDOUT_EVERY = 100
DEFAULT_CLIMBMIX_SHARDS = 8  # what nanochat's speedrun fetches first, for tokenizer training
SCAN_BYTES = 1 << 20


# ------------------------------------------------------------------ readers


def _contains(path: Path, needle: bytes) -> bool:
    """Whether the file holds `needle`, scanning in chunks (stops at the first hit)."""
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(SCAN_BYTES):
            if needle in tail + chunk:
                return True
            tail = chunk[-(len(needle) - 1) :]
    return False


def _lines(path: Path) -> Iterator[tuple[int, bytes, str]]:
    """(byte offset, raw bytes, text) of each line of a UTF-8 file, split like Python's text mode does.

    Read in binary so that every document's byte span is known for random access.
    """
    offset = 0
    with open(path, "rb") as f:
        for chunk in f:  # binary iteration ends lines at b"\n" only; text mode also ends them at a lone b"\r"
            for raw in chunk.splitlines(keepends=True):
                try:
                    yield offset, raw, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataSourceError(f"{path} is not UTF-8 text ({e.reason} at byte {offset + e.start})") from None
                offset += len(raw)


def _txt_document(text: str) -> str:
    """A .txt document from its lines as read in binary: newlines as text mode gives them, stripped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _jsonl_document(raw: bytes, where: str) -> str:
    try:
        record = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DataSourceError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataSourceError(f'{where}: expected a JSON object with a string "text" field')
    return record["text"]


def _scan_txt(path: Path) -> Iterator[tuple[int, int, str]]:
    by_marker = _contains(path, END_OF_TEXT.encode())
    lines: list[str] = []
    start = end = 0
    for offset, raw, line in _lines(path):
        end = offset + len(raw)
        if (line.strip() == END_OF_TEXT) if by_marker else not line.strip():
            if doc := _txt_document("".join(lines)):
                yield start, offset, doc
            lines = []
            start = end
        else:
            lines.append(line)
    if doc := _txt_document("".join(lines)):
        yield start, end, doc


def _scan_jsonl(path: Path) -> Iterator[tuple[int, int, str]]:
    for lineno, (offset, raw, line) in enumerate(_lines(path), 1):
        if line.strip():
            yield offset, offset + len(raw), _jsonl_document(raw, f"{path}:{lineno}")


SCANNERS: dict[str, Callable[[Path], Iterator[tuple[int, int, str]]]] = {".txt": _scan_txt, ".jsonl": _scan_jsonl}


def scan_text_file(path: Path) -> Iterator[tuple[int, int, str]]:
    """(start, end, text) of each document of a .txt or .jsonl file, in order; bytes [start, end) hold it."""
    path = Path(path)
    if path.suffix not in SCANNERS:
        raise DataSourceError(f"{path}: not a text file; scan_text_file takes {', '.join(SCANNERS)} files")
    return SCANNERS[path.suffix](path)


def span_text(path: Path, start: int, raw: bytes) -> str:
    """The document of a span found by `scan_text_file`, from its bytes alone."""
    if Path(path).suffix == ".jsonl":
        return _jsonl_document(raw, f"{path} (byte {start})")
    try:
        return _txt_document(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataSourceError(f"{path} is not UTF-8 text ({e.reason} at byte {start + e.start})") from None


def _read_parquet(path: Path) -> Iterator[str]:
    for texts in iter_row_groups(path):
        yield from texts


def _read_text_file(path: Path) -> Iterator[str]:
    return (text for _, _, text in scan_text_file(path))


READERS: dict[str, Callable[[Path], Iterator[str]]] = {
    ".parquet": _read_parquet,
    ".txt": _read_text_file,
    ".jsonl": _read_text_file,
}


def read_documents(path: Path) -> Iterator[str]:
    """All documents of one file, in order; the format comes from the extension."""
    path = Path(path)
    reader = READERS.get(path.suffix)
    if reader is None:
        raise DataSourceError(f"{path}: unsupported file type; use {', '.join(READERS)} files")
    yield from reader(path)


# ---------------------------------------------------------------- resolution


def _local_files(spec: str) -> list[Path]:
    expanded = os.path.expanduser(spec)
    if any(c in expanded for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise DataSourceError(f"no files match {spec!r}")
        unsupported = [str(p) for p in files if p.suffix not in READERS]
        if unsupported:
            raise DataSourceError(
                f"{spec!r} matches unsupported files ({', '.join(unsupported[:3])}); use {', '.join(READERS)} files"
            )
        return files
    path = Path(expanded)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in READERS and not p.name.startswith("."))
        if not files:
            raise DataSourceError(f"directory {path} holds no {', '.join(READERS)} files")
        return files
    if path.is_file():
        if path.suffix not in READERS:
            raise DataSourceError(f"{path}: unsupported file type; use {', '.join(READERS)} files")
        return [path]
    raise DataSourceError(
        f"no such file or directory: {spec!r}. --data takes a file, a directory or a glob of "
        f"{', '.join(READERS)} files, or one of: climbmix, climbmix:N, tinystories"
    )


def _climbmix_files(spec: str) -> list[Path]:
    _, _, count = spec.partition(":")
    if count:
        if not count.isdigit():
            raise DataSourceError(f"bad data spec {spec!r}: use climbmix or climbmix:N with N a number of train shards")
        return download_shards(int(count), climbmix_dir())
    present = list_shards(climbmix_dir())
    return present if len(present) >= 2 else download_shards(DEFAULT_CLIMBMIX_SHARDS, climbmix_dir())


def plan_split(spec: str | None, split: str) -> tuple[list[Path], bool]:
    """The files of `split` and whether they are one file to split by document (see `in_split`)."""
    check_split(split)
    if spec is None:
        directory = ensure_default_corpus()
        logger.info(
            "Data: the embedded default corpus of generated children's stories (synthetic, not real data) in %s",
            directory,
        )
        return split_shards(list_shards(directory), split), False
    if spec == "climbmix" or spec.startswith("climbmix:"):
        return split_shards(_climbmix_files(spec), split), False
    if spec == "tinystories":
        return [download_tinystories(split)], False
    files = _local_files(spec)
    if len(files) == 1:
        return files, True
    return split_shards(files, split), False


def resolve_files(spec: str | None, split: str = "train") -> list[Path]:
    """The files that hold `split` of `spec` (for a single local file: that file, for both splits)."""
    return plan_split(spec, split)[0]


def iter_documents(spec: str | None, split: str = "train") -> Iterator[str]:
    """Stream the documents of `split` of `spec` (see the module docstring for specs and splits).

    The source is resolved (and fetched or generated if needed) right away, so a
    bad spec fails here rather than at the first document.
    """
    files, by_document = plan_split(spec, split)
    return _stream(files, by_document, split)


def in_split(index: int, split: str) -> bool:
    """Whether document `index` of a single local file belongs to `split`: every HOLDOUT_EVERY-th is val."""
    return (index % HOLDOUT_EVERY == 0) == (split == "val")


def _stream(files: list[Path], by_document: bool, split: str) -> Iterator[str]:
    documents = (doc for path in files for doc in read_documents(path))
    if by_document:
        documents = (doc for i, doc in enumerate(documents) if in_split(i, split))
    empty = True
    for doc in documents:
        empty = False
        yield doc
    if empty:
        raise DataSourceError(f"the {split} split of {', '.join(map(str, files))} holds no documents")
