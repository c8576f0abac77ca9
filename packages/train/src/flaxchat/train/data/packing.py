"""Best-fit packing of token sequences into rows of a fixed capacity (nanochat's BOS-aligned packers).

nanochat keeps waiting sequences in a Python list: refills append at the end
and `pop(i)` keeps the order of the rest, so "the lowest buffer index" among
equals is always "the earliest arrival". `BestFitBuffer` keeps one FIFO queue
per length plus the sorted list of lengths present, which picks the same
sequence as nanochat's linear scan in O(log n).

Two ways to fill a row, both refilling the buffer to `min_buffered` before
every pick:
- `pack_rows_cropped` (pretraining): longest sequence that fits, and when none
  fits the shortest one cropped to the space left (its rest is discarded), so
  rows are full and never padded.
- `pack_rows_padded` (SFT): longest sequence that fits, and when none fits the
  rest of the row is padding with loss mask 0; nothing is ever cropped.
"""

import bisect
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np


class BestFitBuffer:
    """Sequences waiting to be packed, each a (key, payload) of a given length, in arrival order."""

    def __init__(self) -> None:
        self._queues: dict[int, deque[tuple[int, Hashable, Any]]] = {}
        self._lengths: list[int] = []  # sorted, one entry per non-empty queue
        self._arrivals = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, key: Hashable, payload: Any, length: int) -> None:
        """Append a sequence at the end of the buffer."""
        if length < 1:
            raise ValueError(f"sequence {key!r} has length {length}; packed sequences hold at least one token")
        queue = self._queues.get(length)
        if queue is None:
            queue = self._queues[length] = deque()
            bisect.insort(self._lengths, length)
        queue.append((self._arrivals, key, payload))
        self._arrivals += 1
        self._size += 1

    def pop_longest_fitting(self, limit: int) -> tuple[Hashable, Any, int] | None:
        """Remove and return (key, payload, length) of the longest sequence of length <= limit, earliest first."""
        i = bisect.bisect_right(self._lengths, limit) - 1
        return self._pop(i) if i >= 0 else None

    def pop_shortest(self) -> tuple[Hashable, Any, int]:
        """Remove and return (key, payload, length) of the shortest sequence, earliest first."""
        if not self._size:
            raise IndexError("pop from an empty BestFitBuffer")
        return self._pop(0)

    def _pop(self, i: int) -> tuple[Hashable, Any, int]:
        length = self._lengths[i]
        queue = self._queues[length]
        _, key, payload = queue.popleft()
        if not queue:
            del self._queues[length]
            del self._lengths[i]
        self._size -= 1
        return key, payload, length

    def keys(self) -> list[Hashable]:
        """The keys of the buffered sequences in buffer order (what nanochat's list index order is)."""
        entries = [entry for queue in self._queues.values() for entry in queue]
        return [key for _, key, _ in sorted(entries, key=lambda entry: entry[0])]


def _top_up(buffer: BestFitBuffer, refill: Callable[[], None], min_buffered: int) -> None:
    while len(buffer) < min_buffered:
        before = len(buffer)
        refill()
        if len(buffer) == before:
            raise ValueError("refill() added no sequence to the buffer; it must push at least one per call")


def pack_rows_cropped(
    buffer: BestFitBuffer, refill: Callable[[], None], *, num_rows: int, capacity: int, min_buffered: int
) -> np.ndarray:
    """int32[num_rows, capacity] rows of whole sequences, the last one of each row cropped to fit.

    Payloads are 1-D integer token arrays. `refill()` pushes at least one
    sequence; it runs whenever the buffer holds fewer than `min_buffered`.
    """
    rows = np.empty((num_rows, capacity), dtype=np.int32)
    for row in rows:
        pos = 0
        while pos < capacity:
            _top_up(buffer, refill, min_buffered)
            remaining = capacity - pos
            picked = buffer.pop_longest_fitting(remaining)
            if picked is None:
                _, tokens, _ = buffer.pop_shortest()
                row[pos:] = tokens[:remaining]
                break
            _, tokens, length = picked
            row[pos : pos + length] = tokens
            pos += length
    return rows


@dataclass(frozen=True)
class PaddedRows:
    tokens: np.ndarray  # int32[num_rows, capacity], padding = pad_id
    mask: np.ndarray  # int8[num_rows, capacity], the sequences' own masks, 0 on padding
    lengths: np.ndarray  # int64[num_rows], tokens before the padding (capacity for a full row)


def pack_rows_padded(
    buffer: BestFitBuffer,
    refill: Callable[[], None],
    *,
    num_rows: int,
    capacity: int,
    min_buffered: int,
    pad_id: int,
) -> PaddedRows:
    """Rows of whole sequences; when none fits, the rest of the row is `pad_id` with mask 0.

    Payloads are (tokens, mask) pairs of 1-D arrays of the same length. A
    sequence longer than `capacity` can never be packed: an empty row that
    nothing fits raises ValueError.
    """
    tokens = np.full((num_rows, capacity), pad_id, dtype=np.int32)
    mask = np.zeros((num_rows, capacity), dtype=np.int8)
    lengths = np.full(num_rows, capacity, dtype=np.int64)
    for r in range(num_rows):
        pos = 0
        while pos < capacity:
            _top_up(buffer, refill, min_buffered)
            picked = buffer.pop_longest_fitting(capacity - pos)
            if picked is None:
                if pos == 0:
                    raise ValueError(
                        f"no buffered sequence fits an empty row of {capacity} tokens: "
                        "sequences must be truncated to the row capacity before packing"
                    )
                lengths[r] = pos
                break
            _, (seq_tokens, seq_mask), length = picked
            tokens[r, pos : pos + length] = seq_tokens
            mask[r, pos : pos + length] = seq_mask
            pos += length
    return PaddedRows(tokens, mask, lengths)
