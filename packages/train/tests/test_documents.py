"""Random access to a split's documents (DocumentStore) and the chunks each process reads."""

import json
import random

import numpy as np
import pytest
from flaxchat.train.data.documents import Block, DocumentStore, process_chunks
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import shard_name, write_shard
from flaxchat.train.data.sources import iter_documents


def docs(prefix: str, n: int) -> list[str]:
    return [f"{prefix} document {i} ünïcode" for i in range(n)]


def check_random_access(store: DocumentStore, expected: list[str]) -> None:
    assert len(store) == len(expected)
    assert store.read(range(len(expected))) == expected
    ids = list(range(len(expected)))
    random.Random(0).shuffle(ids)
    assert store.read(ids) == [expected[i] for i in ids]


def test_parquet_directory(tmp_path):
    for i, n in enumerate([2500, 1030, 700, 300]):
        write_shard(tmp_path / shard_name(i), docs(f"s{i}", n))
    train = DocumentStore(str(tmp_path), "train")
    check_random_access(train, list(iter_documents(str(tmp_path), "train")))
    assert [(b.stop - b.start, b.ordinal) for b in train.blocks] == [
        (1024, 0), (1024, 1), (452, 2), (1024, 0), (6, 1), (700, 0)
    ]
    assert train.blocks[3].start == 2500
    check_random_access(DocumentStore(str(tmp_path), "val"), docs("s3", 300))


def test_single_text_file_split_by_document(tmp_path):
    texts = docs("t", 2500)
    path = tmp_path / "only.txt"
    path.write_text("\n<|endoftext|>\n".join(texts) + "\n", encoding="utf-8")
    for split in ("train", "val"):
        store = DocumentStore(str(path), split)
        check_random_access(store, list(iter_documents(str(path), split)))
    train = DocumentStore(str(path), "train")
    assert len(train) == 2475  # documents 0, 100, ..., 2400 are val
    assert [(b.start, b.stop, b.ordinal) for b in train.blocks] == [(0, 1024, 0), (1024, 2048, 1), (2048, 2475, 2)]


def test_jsonl_files(tmp_path):
    for i, n in enumerate([1500, 40, 10]):
        lines = [json.dumps({"text": t}) for t in docs(f"j{i}", n)]
        (tmp_path / f"part{i}.jsonl").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    store = DocumentStore(str(tmp_path), "train")
    check_random_access(store, docs("j0", 1500) + docs("j1", 40))
    assert [(b.stop - b.start, b.ordinal) for b in store.blocks] == [(1024, 0), (476, 1), (40, 0)]


def test_text_newlines_as_text_mode_reads_them(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"one\r\nline two  \r\n\r\n\r\n  second\rdoc\n\n\xc3\xbcnicode \xe2\x80\x94 third\r")
    expected = ["one\nline two", "second\ndoc", "ünicode — third"]
    assert list(iter_documents(str(path), "val")) == [expected[0]]  # one file: document 0 is val
    store = DocumentStore(str(path), "train")
    assert store.read([0, 1]) == expected[1:]


def test_bad_utf8_names_the_byte(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\nstill fine\n\xff broken\n")
    with pytest.raises(DataSourceError, match=r"not UTF-8 text \(invalid start byte at byte 17\)"):
        DocumentStore(str(path), "train")


def test_out_of_range_ids(tmp_path):
    write_shard(tmp_path / shard_name(0), docs("a", 5))
    write_shard(tmp_path / shard_name(1), docs("b", 5))
    store = DocumentStore(str(tmp_path), "train")
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        store.read([5])
    assert store.read([]) == []


@pytest.mark.parametrize("count", [1, 2, 3])
def test_process_chunks_are_disjoint_and_cover_every_document(count):
    blocks = [Block(0, 1024, 0), Block(1024, 2048, 1), Block(2048, 2500, 2), Block(2500, 3524, 0), Block(3524, 3530, 1)]
    per_process = [process_chunks(blocks, r, count, 128) for r in range(count)]
    ids = [np.concatenate([np.arange(a, b) for a, b in chunks]) for chunks in per_process]
    everything = np.sort(np.concatenate(ids))
    np.testing.assert_array_equal(everything, np.arange(3530))  # disjoint and covering
    for r, chunks in enumerate(per_process):
        assert all(0 < b - a <= 128 for a, b in chunks)
        for a, b in chunks:  # inside one block, and one that process r owns (nanochat's stride per file)
            (block,) = [blk for blk in blocks if blk.start <= a and b <= blk.stop]
            assert block.ordinal % count == r
    assert per_process[0][:3].tolist() == [[0, 128], [128, 256], [256, 384]]
    if count == 2:
        assert [tuple(c) for c in per_process[1][-2:]] == [(1920, 2048), (3524, 3530)]
