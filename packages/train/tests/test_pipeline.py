"""PretrainBatches: nanochat's document order and packing end to end, exact resume, val, sharding, errors."""

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from flaxchat.tokenizer.bpe import Tokenizer
from flaxchat.train.data import sources
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.pipeline import PretrainBatches
from flaxchat.train.data.shards import ensure_default_corpus, shard_name, write_shard
from flaxchat.train.data.stories import generate_stories


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(generate_stories(7, 300), vocab_size=400)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 train shards of generated stories (row groups of 1024, 1024, 52 | 1024, 6 | 470) and a val shard."""
    root = tmp_path_factory.mktemp("corpus")
    stories = generate_stories(11, 4000)
    for i, (a, b) in enumerate([(0, 2100), (2100, 3130), (3130, 3600), (3600, 4000)]):
        write_shard(root / shard_name(i), stories[a:b])
    return str(root)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A train split of 150 short documents (2 chunks an epoch: 128 + 22), and a val shard of 1 row group."""
    root = tmp_path_factory.mktemp("tiny")
    texts = [f"doc {i}: " + "la " * (i % 37) for i in range(200)]
    write_shard(root / shard_name(0), texts[:150])
    write_shard(root / shard_name(1), texts[150:])
    return str(root)


def nanochat_refills(tokenizer, directory, process_index, process_count):
    """nanochat's _document_batches + tokenization, forever: row groups r, r+W, ... of each train file in slices
    of 128 documents, each document encoded on its own with <|bos|> first."""
    paths = sorted(Path(directory).glob("*.parquet"))[:-1]  # the last file is val
    while True:
        for path in paths:
            pf = pq.ParquetFile(path)
            for rg in range(process_index, pf.num_row_groups, process_count):
                texts = pf.read_row_group(rg).column("text").to_pylist()
                for i in range(0, len(texts), 128):
                    yield [tokenizer.encode(t, prepend=tokenizer.bos_id) for t in texts[i : i + 128]]


def take(batches, n):
    return [next(batches) for _ in range(n)]


@pytest.mark.parametrize(
    ("process_index", "process_count", "batch_size", "seq_len", "buffer_size", "steps"),
    [(0, 1, 4, 128, 1000, 8), (1, 2, 3, 200, 100, 10), (2, 3, 2, 64, 20, 40)],
)
def test_batches_are_nanochats(
    tokenizer, corpus, reference_cropped, process_index, process_count, batch_size, seq_len, buffer_size, steps
):
    reference = reference_cropped(
        nanochat_refills(tokenizer, corpus, process_index, process_count), batch_size, seq_len + 1, buffer_size
    )
    with PretrainBatches(
        tokenizer,
        corpus,
        "train",
        batch_size,
        seq_len,
        process_index=process_index,
        process_count=process_count,
        buffer_size=buffer_size,
    ) as batches:
        for _ in range(steps):
            inputs, targets = next(batches)
            rows = np.array(next(reference)[0])
            assert inputs.dtype == targets.dtype == np.int32
            assert inputs.shape == targets.shape == (batch_size, seq_len)
            np.testing.assert_array_equal(inputs, rows[:, :-1])
            np.testing.assert_array_equal(targets, rows[:, 1:])
            assert (inputs[:, 0] == tokenizer.bos_id).all()  # every row starts a document


def test_rows_hold_whole_documents_but_the_last(tokenizer, tiny):
    """No padding: a row is documents (each from its <|bos|>) laid end to end; only the last may be cut short."""
    docs = {tuple(tokenizer.encode(t, prepend=tokenizer.bos_id)) for t in sources.iter_documents(tiny, "train")}
    with PretrainBatches(tokenizer, tiny, "train", 4, 48, buffer_size=10) as batches:
        for inputs, targets in take(batches, 5):
            for row in np.concatenate([inputs, targets[:, -1:]], axis=1).tolist():
                starts = [i for i, t in enumerate(row) if t == tokenizer.bos_id] + [len(row)]
                pieces = [tuple(row[a:b]) for a, b in zip(starts, starts[1:])]
                assert starts[0] == 0 and all(piece in docs for piece in pieces[:-1])
                assert any(doc[: len(pieces[-1])] == pieces[-1] for doc in docs)


@pytest.mark.parametrize(("data", "buffer_size", "steps"), [("corpus", 1000, 8), ("corpus", 30, 12), ("tiny", 10, 80)])
def test_resume_is_exact(tokenizer, request, data, buffer_size, steps):
    directory = request.getfixturevalue(data)

    def make():
        return PretrainBatches(tokenizer, directory, "train", 3, 96, buffer_size=buffer_size, read_threads=3)

    with make() as straight:
        expected = take(straight, steps)
        final_epoch = straight.epoch
    with make() as first:
        got = take(first, steps // 2)
        state = json.loads(json.dumps(first.get_state()))
        saved_epoch = first.epoch
    with make() as resumed:
        resumed.set_state(state)
        got += take(resumed, steps - steps // 2)
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    assert state["epoch"] == saved_epoch
    if data == "tiny":  # 2 chunks an epoch: the run crosses epoch boundaries before and after the save
        assert 1 < saved_epoch < final_epoch


def test_state_is_small_and_names_the_buffered_documents(tokenizer, corpus):
    with PretrainBatches(tokenizer, corpus, "train", 4, 128) as batches:
        take(batches, 3)
        state = batches.get_state()
    assert set(state) == {"version", "config", "epoch", "source", "buffer"}
    assert 1000 <= len(state["buffer"]) < 1000 + 128
    assert all(isinstance(i, int) and 0 <= i < 3600 for i in state["buffer"])
    assert len(json.dumps(state)) < 10_000


def test_state_from_another_configuration_is_refused(tokenizer, corpus):
    with PretrainBatches(tokenizer, corpus, "train", 4, 128) as batches:
        state = batches.get_state()
    with PretrainBatches(tokenizer, corpus, "train", 4, 256) as other:
        with pytest.raises(DataSourceError, match="seq_len: saved 128, now 256"):
            other.set_state(state)
        with pytest.raises(DataSourceError, match="version"):
            other.set_state({"buffer": []})


def test_val_is_the_same_every_time(tokenizer, corpus):
    def val_batches():
        with PretrainBatches(tokenizer, corpus, "val", 4, 128, buffer_size=50) as batches:
            return take(batches, 4)

    first, second = val_batches(), val_batches()
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    with PretrainBatches(tokenizer, corpus, "train", 4, 128, buffer_size=50) as train:
        assert not np.array_equal(next(train)[0], first[0][0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seq_len": 0}, "seq_len must be a positive integer"),
        ({"batch_size": -2}, "batch_size must be a positive integer"),
        ({"buffer_size": 0}, "buffer_size must be a positive integer"),
        ({"process_index": 2, "process_count": 2}, r"process_index must be in \[0, 2\)"),
    ],
)
def test_bad_arguments(tokenizer, tiny, kwargs, message):
    args = {"batch_size": 2, "seq_len": 16} | kwargs
    with pytest.raises(DataSourceError, match=message):
        PretrainBatches(tokenizer, tiny, "train", **args)


def test_empty_sources(tokenizer, tiny, tmp_path):
    single = tmp_path / "one.txt"
    single.write_text("only document\n", encoding="utf-8")  # document 0 is val: train is empty
    with pytest.raises(DataSourceError, match="train split .* holds no documents"):
        PretrainBatches(tokenizer, str(single), "train", 2, 16)
    blank = tmp_path / "blank"
    write_shard(blank / shard_name(0), [])
    write_shard(blank / shard_name(1), ["val"])
    with pytest.raises(DataSourceError, match="holds no documents"):
        PretrainBatches(tokenizer, str(blank), "train", 2, 16)
    with pytest.raises(DataSourceError, match="process 1 of 2 gets no documents: the val split has only 1 blocks"):
        PretrainBatches(tokenizer, tiny, "val", 2, 16, process_index=1, process_count=2)


def test_throughput_on_the_default_corpus(tokenizer, tmp_path, monkeypatch, capsys):
    """Prints tokens/s (not asserted): the measured figure for a real run is in the README."""
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path))
    monkeypatch.setattr(sources, "ensure_default_corpus", lambda: ensure_default_corpus(2, 1024))
    with PretrainBatches(tokenizer, None, "train", 32, 512) as batches:
        next(batches)
        start = time.perf_counter()
        tokens = sum(inputs.size for inputs, _ in take(batches, 10))
        rate = tokens / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\n[pipeline] default corpus, vocab {tokenizer.vocab_size}, B=32 T=512: {rate / 1e6:.2f} M tokens/s")
