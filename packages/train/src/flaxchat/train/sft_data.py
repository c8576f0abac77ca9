"""SFT batches: conversations rendered with their loss masks, best-fit packed into padded rows.

This is nanochat's `sft_data_generator_bos_bestfit`: process r of W reads conversations
r, r+W, ... of a task (any object with `__len__` and `__getitem__(i) -> {"messages": [...]}`),
wrapping around at the end with the epoch counter; each is rendered with
`render_conversation` (mask 1 on the assistant's own tokens); rows of `seq_len + 1` tokens take
the longest buffered conversation that fits until none does, and the rest of the row is BOS
padding with mask 0. Conversations are never cropped (only truncated to the row at render time).
Targets are the next tokens, -1 wherever the next token is not supervised (user turns, tool
outputs, padding), so the loss covers exactly the assistant's tokens.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from flaxchat.train.data.packing import BestFitBuffer, pack_rows_padded
from flaxchat.train.step import IGNORE_INDEX

RENDER_MAX_TOKENS = 2048  # nanochat renders conversations truncated to 2048 tokens
BUFFER_SIZE = 100  # conversations kept for best-fit packing


class SFTDataError(ValueError):
    """SFT data cannot be batched as asked (empty task, bad sizes)."""


class ConversationTask(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def supervised_targets(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of rows (..., T+1): targets are the next tokens, -1 where their mask is 0."""
    inputs = tokens[..., :-1].astype(np.int32)
    targets = np.where(mask[..., 1:] == 0, IGNORE_INDEX, tokens[..., 1:]).astype(np.int32)
    return inputs, targets


class ConversationBatches:
    """Endless (inputs, targets) int32 batches of shape (rows, seq_len) from a conversation task.

    `consumed` counts the conversations packed so far as nanochat does (starting at the process
    index, + process_count per conversation), so `progress(epochs)` = consumed / (len * epochs)
    is the fraction of `epochs` passes done, the same on every process.
    """

    def __init__(self, task: ConversationTask, tokenizer, *, rows: int, seq_len: int,
                 process_index: int = 0, process_count: int = 1, buffer_size: int = BUFFER_SIZE):
        if rows <= 0 or seq_len <= 0 or buffer_size <= 0:
            raise SFTDataError(f"rows ({rows}), seq_len ({seq_len}) and buffer_size ({buffer_size}) must be positive")
        if not 0 <= process_index < process_count:
            raise SFTDataError(f"process index {process_index} is not in [0, {process_count})")
        self.size = len(task)
        if self.size == 0:
            raise SFTDataError("the conversation task is empty: give it at least one conversation")
        self.task, self.tokenizer = task, tokenizer
        self.rows, self.capacity = rows, seq_len + 1  # +1: the last position's target
        self.stride = process_count
        self.buffer_size = buffer_size
        self.cursor = process_index
        self.consumed = process_index
        self.epoch = 1
        self._buffer = BestFitBuffer()

    def _refill(self) -> None:
        conversation = self.task[self.cursor]
        ids, mask = self.tokenizer.render_conversation(conversation, max_tokens=min(RENDER_MAX_TOKENS, self.capacity))
        self._buffer.push(self.cursor, (np.asarray(ids, np.int32), np.asarray(mask, np.int8)), len(ids))
        self.cursor += self.stride
        if self.cursor >= self.size:
            self.cursor %= self.size
            self.epoch += 1

    def progress(self, epochs: int = 1) -> float:
        return self.consumed / (self.size * epochs)

    def __iter__(self) -> "ConversationBatches":
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        before = len(self._buffer)
        pushed = 0

        def refill() -> None:
            nonlocal pushed
            self._refill()
            pushed += 1

        packed = pack_rows_padded(self._buffer, refill, num_rows=self.rows, capacity=self.capacity,
                                  min_buffered=self.buffer_size, pad_id=self.tokenizer.bos_id)
        self.consumed += self.stride * (before + pushed - len(self._buffer))
        return supervised_targets(packed.tokens, packed.mask)
