"""Random access to the documents of a split, and which of them each process reads.

`DocumentStore(spec, split)` numbers the split's documents 0..N-1 in
`iter_documents` order and reads any of them without loading whole files:
parquet files are indexed from their row-group metadata, .txt and .jsonl files
by one scan that records each document's byte span.

Documents come in blocks, the unit nanochat hands out to processes: a parquet
row group, or ROW_GROUP_SIZE consecutive documents of a text file (of the
split's documents, for a single file split by document). `process_chunks`
gives process r of W the blocks r, r+W, r+2W, ... of every file (nanochat's
row-group stride), cut into chunks of at most `chunk_size` documents.
"""

import functools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import ROW_GROUP_SIZE, open_text_parquet, read_row_group
from flaxchat.train.data.sources import in_split, plan_split, scan_text_file, span_text

ROW_GROUP_CACHE = 8  # decoded row groups kept: a row group's chunks are read one after another, by several threads


@dataclass(frozen=True)
class Block:
    start: int  # first document id
    stop: int  # one past the last
    ordinal: int  # the block's position in its file: what processes stride over


def _even_blocks(count: int) -> list[int]:
    """Sizes of ROW_GROUP_SIZE-document blocks covering `count` documents."""
    return [min(ROW_GROUP_SIZE, count - start) for start in range(0, count, ROW_GROUP_SIZE)]


def _read_row_group(path: Path, index: int) -> list[str]:
    # A fresh handle per read: reader threads never share one.
    return read_row_group(open_text_parquet(path), index)


class _ParquetDocuments:
    def __init__(self, path: Path, row_group: Callable[[Path, int], list[str]]):
        self.path = path
        metadata = open_text_parquet(path).metadata
        self.block_sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        self._group_starts = np.cumsum([0, *self.block_sizes])
        self.num_documents = int(self._group_starts[-1])
        self._row_group = row_group

    def read(self, rows: np.ndarray) -> list[str]:
        groups = np.searchsorted(self._group_starts, rows, side="right") - 1
        offsets = (rows - self._group_starts[groups]).tolist()
        texts: list[str] = [""] * len(rows)
        for g in np.unique(groups).tolist():
            group = self._row_group(self.path, g)
            for i in np.flatnonzero(groups == g).tolist():
                texts[i] = group[offsets[i]]
        return texts


class _TextDocuments:
    def __init__(self, path: Path):
        self.path = path
        starts, ends = array("q"), array("q")
        for start, end, _ in scan_text_file(path):
            starts.append(start)
            ends.append(end)
        self._starts = np.frombuffer(starts, dtype=np.int64)
        self._ends = np.frombuffer(ends, dtype=np.int64)
        self.num_documents = len(self._starts)
        self.block_sizes = _even_blocks(self.num_documents)

    def read(self, rows: np.ndarray) -> list[str]:
        texts = []
        with open(self.path, "rb") as f:
            for start, end in zip(self._starts[rows].tolist(), self._ends[rows].tolist()):
                f.seek(start)
                texts.append(span_text(self.path, start, f.read(end - start)))
        return texts


def _open(path: Path, row_group: Callable[[Path, int], list[str]]) -> _ParquetDocuments | _TextDocuments:
    return _ParquetDocuments(path, row_group) if path.suffix == ".parquet" else _TextDocuments(path)


def _blocks(first_id: int, sizes: Sequence[int]) -> list[Block]:
    starts = np.cumsum([first_id, *sizes]).tolist()
    return [Block(starts[i], starts[i + 1], i) for i in range(len(sizes))]


class DocumentStore:
    """The documents of `split` of `spec` (a data spec as for `iter_documents`), by id."""

    def __init__(self, spec: str | None, split: str):
        self.split = split
        self.files, by_document = plan_split(spec, split)
        # One cache for all files, so memory stays bounded however many shards a run goes through.
        row_group = functools.lru_cache(maxsize=ROW_GROUP_CACHE)(_read_row_group)
        self._readers = [_open(path, row_group) for path in self.files]
        if by_document:
            (reader,) = self._readers
            self._rows = np.array([i for i in range(reader.num_documents) if in_split(i, split)], dtype=np.int64)
            self._file_starts = np.zeros(1, dtype=np.int64)
            self.num_documents = len(self._rows)
            self.blocks = _blocks(0, _even_blocks(self.num_documents))
        else:
            self._rows = None
            counts = [reader.num_documents for reader in self._readers]
            self._file_starts = np.cumsum([0, *counts[:-1]])
            self.num_documents = sum(counts)
            self.blocks = [
                block
                for start, reader in zip(self._file_starts.tolist(), self._readers)
                for block in _blocks(start, reader.block_sizes)
            ]
        if self.num_documents == 0:
            raise DataSourceError(f"the {split} split of {', '.join(map(str, self.files))} holds no documents")

    def __len__(self) -> int:
        return self.num_documents

    def read(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The texts of documents `ids`, in that order (each file is opened once per call)."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_documents):
            raise IndexError(f"document ids must be in [0, {self.num_documents}) for the {self.split} split")
        files = np.searchsorted(self._file_starts, ids, side="right") - 1
        rows = self._rows[ids] if self._rows is not None else ids - self._file_starts[files]
        texts: list[str] = [""] * len(ids)
        for f in np.unique(files).tolist():
            where = np.flatnonzero(files == f)
            for i, text in zip(where.tolist(), self._readers[f].read(rows[where])):
                texts[i] = text
        return texts


def process_chunks(blocks: Sequence[Block], process_index: int, process_count: int, chunk_size: int) -> np.ndarray:
    """int64[n, 2] [start, stop) document ranges that process `process_index` of `process_count` reads, in order."""
    chunks = [
        (start, min(start + chunk_size, block.stop))
        for block in blocks
        if block.ordinal % process_count == process_index
        for start in range(block.start, block.stop, chunk_size)
    ]
    return np.array(chunks, dtype=np.int64).reshape(-1, 2)
