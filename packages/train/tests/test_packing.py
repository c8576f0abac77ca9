"""Best-fit packing against nanochat's list-scan packers (conftest.py) and a hand-worked example."""

import random

import numpy as np
import pytest
from flaxchat.train.data.packing import BestFitBuffer, pack_rows_cropped, pack_rows_padded

STRIDE = 1000  # doc k holds tokens k*STRIDE, k*STRIDE+1, ...: every token says which doc it came from


def make_docs(rng: random.Random, n: int, choices: list[int]) -> list[list[int]]:
    # Few distinct lengths, so ties (which nanochat breaks by list index) are everywhere.
    lengths = [rng.choice(choices) for _ in range(n)]
    return [[k * STRIDE + j for j in range(length)] for k, length in enumerate(lengths)]


def refills(docs: list[list[int]], sizes: list[int]) -> list[list[list[int]]]:
    """docs cut into consecutive refills of the given sizes."""
    starts = np.cumsum([0, *sizes]).tolist()
    return [docs[a:b] for a, b in zip(starts, starts[1:])]


@pytest.mark.parametrize(("seed", "capacity", "buffer_size"), [(0, 17, 5), (1, 65, 20), (2, 9, 1), (3, 40, 64)])
def test_cropped_matches_nanochat(seed, capacity, buffer_size, reference_cropped):
    rng = random.Random(seed)
    docs = make_docs(rng, 4000, [1, 2, 3, 5, 8, 8, 13, 21, 34, 2 * capacity])
    chunks = refills(docs, [rng.randint(1, 7) for _ in range(1000)])
    buffer = BestFitBuffer()
    pending = iter(chunks)

    def refill():
        for doc in next(pending):
            buffer.push(doc[0] // STRIDE, np.array(doc, dtype=np.int32), len(doc))

    reference = reference_cropped(iter(chunks), 4, capacity, buffer_size)
    for _ in range(6):
        rows = pack_rows_cropped(buffer, refill, num_rows=4, capacity=capacity, min_buffered=buffer_size)
        expected, expected_buffer = next(reference)
        assert rows.dtype == np.int32 and rows.shape == (4, capacity)
        assert rows.tolist() == expected
        assert buffer.keys() == [doc[0] // STRIDE for doc in expected_buffer]


def test_cropped_hand_worked_example():
    lengths = {"A": 6, "B": 3, "C": 3, "D": 8, "E": 2, "F": 5, "G": 1, "H": 3}
    tokens = {name: np.arange(n, dtype=np.int32) + 10 * (i + 1) for i, (name, n) in enumerate(lengths.items())}
    order = iter(lengths)
    buffer = BestFitBuffer()

    def refill():
        name = next(order)
        buffer.push(name, tokens[name], lengths[name])

    rows = pack_rows_cropped(buffer, refill, num_rows=2, capacity=10, min_buffered=3)
    # Row 1: [A,B,C] -> A (longest <= 10); [B,C,D] -> B (3, ties C, lower index); [C,D,E] nothing fits 1 -> E cropped.
    # Row 2: [C,D,F] -> D; [C,F,G] -> G fits 2; [C,F,H] nothing fits 1 -> C (shortest, ties H) cropped.
    t = tokens
    assert rows.tolist() == [
        [*t["A"], *t["B"], *t["E"][:1]],
        [*t["D"], *t["G"], *t["C"][:1]],
    ]
    assert buffer.keys() == ["F", "H"]


@pytest.mark.parametrize(("seed", "capacity", "buffer_size"), [(0, 30, 8), (1, 100, 25), (2, 34, 1)])
def test_padded_matches_nanochat(seed, capacity, buffer_size, reference_padded):
    rng = random.Random(seed)
    # Every conversation fits an empty row, as render_conversation's truncation ensures in SFT.
    docs = make_docs(rng, 2000, [5, 7, 13, capacity // 3, capacity // 2, capacity])
    convs = [(doc, [rng.randint(0, 1) for _ in doc]) for doc in docs]
    buffer = BestFitBuffer()
    position = iter(range(len(convs)))

    def refill():
        k = next(position)
        ids, mask = convs[k]
        buffer.push(k, (np.array(ids, dtype=np.int32), np.array(mask, dtype=np.int8)), len(ids))

    packed = pack_rows_padded(buffer, refill, num_rows=12, capacity=capacity, min_buffered=buffer_size, pad_id=-7)
    rows, masks, lengths, left = reference_padded(iter(convs), 12, capacity, buffer_size, pad=-7)
    assert packed.tokens.tolist() == rows
    assert packed.mask.tolist() == masks
    assert packed.lengths.tolist() == lengths
    assert buffer.keys() == [ids[0] // STRIDE for ids, _ in left]
    assert any(n < capacity for n in lengths), "the case should include padded rows"


def test_padded_hand_worked_example():
    sequences = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12, 13, 14], [15, 16, 17], [18, 19]]
    order = iter(range(len(sequences)))
    buffer = BestFitBuffer()

    def refill():
        k = next(order)
        ids = np.array(sequences[k])
        buffer.push(k, (ids, ids % 2), len(ids))  # mask: odd tokens are trained on

    packed = pack_rows_padded(buffer, refill, num_rows=2, capacity=6, min_buffered=3, pad_id=0)
    # Row 1: [s0,s1,s2] -> s2 (4); [s0,s1,s3] -> s1 fills the last 2.
    # Row 2: [s0,s3,s4] -> s4 (4); [s0,s3,s5] -> s3 (1); [s0,s5,s6] nothing fits 1 -> padding, s6 is not cropped.
    assert packed.tokens.tolist() == [[6, 7, 8, 9, 4, 5], [11, 12, 13, 14, 10, 0]]
    assert packed.mask.tolist() == [[0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 0, 0]]
    assert packed.lengths.tolist() == [6, 5]
    assert buffer.keys() == [0, 5, 6]


def test_errors():
    buffer = BestFitBuffer()
    with pytest.raises(ValueError, match="length 0"):
        buffer.push("empty", np.zeros(0), 0)
    with pytest.raises(IndexError):
        buffer.pop_shortest()
    assert buffer.pop_longest_fitting(100) is None
    with pytest.raises(ValueError, match="added no sequence"):
        pack_rows_cropped(buffer, lambda: None, num_rows=1, capacity=4, min_buffered=1)
    buffer.push("long", (np.arange(9), np.ones(9)), 9)
    with pytest.raises(ValueError, match="no buffered sequence fits an empty row of 8"):
        pack_rows_padded(buffer, lambda: None, num_rows=1, capacity=8, min_buffered=1, pad_id=0)
