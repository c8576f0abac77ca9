"""Shared test helpers: nanochat's packers written out as plain list scans, to check the fast ones against."""

from collections.abc import Iterator

import pytest


def nanochat_cropped(refills: Iterator[list[list]], rows: int, capacity: int, buffer_size: int):
    """nanochat's pretraining packer as a generator: each refill appends the next list of token lists of
    `refills`. Yields (a batch of rows as lists, a copy of the buffer list after it)."""
    buffer: list[list] = []
    while True:
        out = []
        for _ in range(rows):
            row: list = []
            while len(row) < capacity:
                while len(buffer) < buffer_size:
                    buffer.extend(next(refills))
                remaining = capacity - len(row)
                best_idx, best_len = -1, 0
                for i, doc in enumerate(buffer):
                    if len(doc) <= remaining and len(doc) > best_len:
                        best_idx, best_len = i, len(doc)
                if best_idx >= 0:
                    row.extend(buffer.pop(best_idx))
                else:
                    shortest = min(range(len(buffer)), key=lambda i: len(buffer[i]))
                    row.extend(buffer.pop(shortest)[:remaining])
            out.append(row)
        yield out, list(buffer)


def nanochat_padded(convs: Iterator[tuple[list, list]], rows: int, capacity: int, buffer_size: int, pad: int):
    """nanochat's SFT packer (one conversation per refill). Returns (rows, mask rows, content lengths, buffer)."""
    buffer: list[tuple[list, list]] = []
    out, masks, lengths = [], [], []
    for _ in range(rows):
        row: list = []
        mask: list = []
        content = capacity
        while len(row) < capacity:
            while len(buffer) < buffer_size:
                buffer.append(next(convs))
            remaining = capacity - len(row)
            best_idx, best_len = -1, 0
            for i, (ids, _) in enumerate(buffer):
                if len(ids) <= remaining and len(ids) > best_len:
                    best_idx, best_len = i, len(ids)
            if best_idx >= 0:
                ids, conv_mask = buffer.pop(best_idx)
                row.extend(ids)
                mask.extend(conv_mask)
            else:
                content = len(row)
                row.extend([pad] * remaining)
                mask.extend([0] * remaining)
        out.append(row)
        masks.append(mask)
        lengths.append(content)
    return out, masks, lengths, buffer


@pytest.fixture
def reference_cropped():
    return nanochat_cropped


@pytest.fixture
def reference_padded():
    return nanochat_padded
