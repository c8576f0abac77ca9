"""Pretraining batches on grain: a split's documents -> <|bos|>-prepended tokens -> best-fit packed rows.

nanochat's `tokenizing_distributed_data_loader_with_state_bos_bestfit`, as one
grain dataset:

  chunk k of this process (<= 128 documents of one block)   MapDataset.source(_ChunkTexts)
    -> the chunk's texts tokenized, <|bos|> prepended        .map(_Tokenize), in grain's reader threads
    -> forever; chunk k is in epoch k // chunks + 1          .repeat()
    -> read ahead by `read_threads` threads                  .to_iter_dataset(ReadOptions)
    -> rows of seq_len + 1 tokens, packed best fit           _PackedRows (packing.pack_rows_cropped)
    -> (inputs, targets) = (rows[:, :-1], rows[:, 1:])

Each chunk is one refill of the packing buffer, as each 128-document slice of a
row group is in nanochat, so a process sees nanochat's document order and
packs nanochat's rows. Processes stride over blocks (see documents.py).

State, between batches: grain's position (the next chunk) plus the ids of the
documents still in the packing buffer, in buffer order. Restoring re-reads and
re-tokenizes those documents, so a restored pipeline continues bit for bit
(nanochat's own resume skips the buffer and is only approximate).
"""

from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np
from flaxchat.tokenizer.bpe import Tokenizer

from flaxchat.train.data.documents import DocumentStore, process_chunks
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.packing import BestFitBuffer, pack_rows_cropped

STATE_VERSION = 1


class _ChunkTexts:
    """grain data source: chunk k -> (document ids, texts)."""

    def __init__(self, store: DocumentStore, chunks: np.ndarray):
        self._store = store
        self._chunks = chunks

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, k: int) -> tuple[np.ndarray, list[str]]:
        ids = np.arange(*self._chunks[k])
        return ids, self._store.read(ids)


class _Tokenize:
    def __init__(self, tokenizer: Tokenizer, num_threads: int):
        self._tokenizer = tokenizer
        self._num_threads = num_threads

    def texts(self, texts: list[str]) -> list[np.ndarray]:
        bos = self._tokenizer.bos_id
        encoded = self._tokenizer.encode(texts, prepend=bos, num_threads=self._num_threads)
        return [np.asarray(ids, dtype=np.int32) for ids in encoded]

    def __call__(self, chunk: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, list[np.ndarray]]:
        ids, texts = chunk
        return ids, self.texts(texts)


class _PackedRows(grain.IterDataset):
    """(inputs, targets) int32[batch_size, seq_len] batches packed from tokenized chunks."""

    def __init__(
        self, parent: grain.IterDataset, *, batch_size: int, seq_len: int, buffer_size: int, restore: Callable
    ):
        super().__init__(parent)
        self._args = dict(batch_size=batch_size, seq_len=seq_len, buffer_size=buffer_size, restore=restore)

    def __iter__(self) -> "_PackedRowsIterator":
        return _PackedRowsIterator(self._parent.__iter__(), **self._args)


class _PackedRowsIterator(grain.DatasetIterator):
    def __init__(
        self,
        parent: grain.DatasetIterator,
        *,
        batch_size: int,
        seq_len: int,
        buffer_size: int,
        restore: Callable[[Sequence[int]], list[np.ndarray]],
    ):
        super().__init__(parent)
        self._batch_size = batch_size
        self._capacity = seq_len + 1
        self._buffer_size = buffer_size
        self._restore = restore
        self._buffer = BestFitBuffer()

    def _push(self, ids: Sequence[int], tokens: list[np.ndarray]) -> None:
        for key, doc in zip(ids, tokens, strict=True):
            self._buffer.push(int(key), doc, len(doc))

    def _refill(self) -> None:
        self._push(*next(self._parent))

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        rows = pack_rows_cropped(
            self._buffer,
            self._refill,
            num_rows=self._batch_size,
            capacity=self._capacity,
            min_buffered=self._buffer_size,
        )
        return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])

    def get_state(self) -> dict[str, Any]:
        return {"source": self._parent.get_state(), "buffer": self._buffer.keys()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["source"])
        self._buffer = BestFitBuffer()
        self._push(state["buffer"], self._restore(state["buffer"]))


class PretrainBatches:
    """Infinite iterator of (inputs, targets) int32[batch_size, seq_len] numpy batches for one process.

    Every row starts with <|bos|> and is packed with whole documents, best fit,
    the last one cropped (nanochat's BOS-aligned best-fit packing); targets are
    inputs shifted by one. `get_state()` is a JSON-serializable dict;
    `set_state()` on a pipeline built with the same arguments resumes exactly.
    A fresh pipeline always yields the same batches (what validation relies on).

    read_threads: grain threads that read and tokenize chunks ahead of packing
      (tiktoken releases the GIL, so they run in parallel); prefetch: chunks in flight.
    tokenizer_threads: threads of tiktoken's batch encode within one chunk. Spreading
      chunks over grain threads measured as fast or faster than threads within a chunk.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        spec: str | None,
        split: str,
        batch_size: int,
        seq_len: int,
        *,
        process_index: int = 0,
        process_count: int = 1,
        buffer_size: int = 1000,
        tokenizer_batch_size: int = 128,
        read_threads: int = 4,
        tokenizer_threads: int = 1,
        prefetch: int = 16,
    ):
        positive = dict(
            batch_size=batch_size,
            seq_len=seq_len,
            process_count=process_count,
            buffer_size=buffer_size,
            tokenizer_batch_size=tokenizer_batch_size,
            read_threads=read_threads,
            tokenizer_threads=tokenizer_threads,
            prefetch=prefetch,
        )
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise DataSourceError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(process_index, int) or not 0 <= process_index < process_count:
            raise DataSourceError(f"process_index must be in [0, {process_count}), got {process_index!r}")
        self.store = DocumentStore(spec, split)
        chunks = process_chunks(self.store.blocks, process_index, process_count, tokenizer_batch_size)
        if not len(chunks):
            raise DataSourceError(
                f"process {process_index} of {process_count} gets no documents: the {split} split has only "
                f"{len(self.store.blocks)} blocks (row groups) to share out; use fewer processes or more data"
            )
        self.chunks_per_epoch = len(chunks)
        self._config = dict(
            split=split,
            documents=self.store.num_documents,
            batch_size=batch_size,
            seq_len=seq_len,
            process_index=process_index,
            process_count=process_count,
            buffer_size=buffer_size,
            tokenizer_batch_size=tokenizer_batch_size,
            vocab_size=tokenizer.vocab_size,
        )
        tokenize = _Tokenize(tokenizer, tokenizer_threads)
        texts = grain.MapDataset.source(_ChunkTexts(self.store, chunks))
        tokens = texts.map(tokenize).repeat().to_iter_dataset(
            grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
        )
        self.dataset = _PackedRows(
            tokens,
            batch_size=batch_size,
            seq_len=seq_len,
            buffer_size=buffer_size,
            restore=lambda ids: tokenize.texts(self.store.read(ids)),
        )
        self._iterator = iter(self.dataset)

    def __iter__(self) -> "PretrainBatches":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return next(self._iterator)

    @property
    def epoch(self) -> int:
        """The epoch of the most recently read chunk, from 1 (as nanochat's loader state)."""
        next_chunk = self._iterator.get_state()["source"]["next_index"]
        return max(next_chunk - 1, 0) // self.chunks_per_epoch + 1

    def get_state(self) -> dict[str, Any]:
        """{"version", "config" (checked on restore), "epoch" (for logs), "source" (grain's), "buffer" (doc ids)}."""
        state = self._iterator.get_state()
        return {"version": STATE_VERSION, "config": dict(self._config), "epoch": self.epoch, **state}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise DataSourceError(f"not a pipeline state of version {STATE_VERSION}; was it saved by PretrainBatches?")
        saved = state.get("config", {})
        changed = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in self._config.items() if saved.get(k) != v]
        if changed:
            raise DataSourceError(
                "the saved pipeline state belongs to another configuration or data (" + "; ".join(changed) + "); "
                "resume with the same data, tokenizer, batch size, sequence length and process layout"
            )
        self._iterator.set_state({"source": state["source"], "buffer": state["buffer"]})

    def close(self) -> None:
        """Stop grain's reader threads (also done when the pipeline is garbage collected)."""
        self._iterator.close()

    def __enter__(self) -> "PretrainBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
