"""Shards, the split rules, the default corpus, and reading local parquet/txt/jsonl sources."""

import json
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flaxchat.train.data import sources
from flaxchat.train.data.download import TINYSTORIES_FILES, climbmix_dir, tinystories_dir
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.shards import (
    DEFAULT_TRAIN_SEED,
    DEFAULT_VAL_SEED,
    ensure_default_corpus,
    iter_row_groups,
    list_shards,
    shard_name,
    split_shards,
    write_shard,
)
from flaxchat.train.data.sources import HOLDOUT_EVERY, iter_documents, read_documents, resolve_files
from flaxchat.train.data.stories import generate_stories


@pytest.fixture(autouse=True)
def base(tmp_path, monkeypatch):
    """Every test gets its own empty base directory."""
    root = tmp_path / "base"
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(root))
    return root


def docs(prefix: str, n: int) -> list[str]:
    return [f"{prefix} document {i} ünïcode" for i in range(n)]


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------- shards


def test_shard_roundtrip_in_row_groups_of_1024(tmp_path):
    texts = docs("a", 2500)
    path = tmp_path / shard_name(3)
    write_shard(path, texts)
    assert path.name == "shard_00003.parquet"
    groups = list(iter_row_groups(path))
    assert [len(g) for g in groups] == [1024, 1024, 452]
    assert [t for g in groups for t in g] == texts
    assert pq.ParquetFile(path).schema_arrow.names == ["text"]
    assert os.listdir(tmp_path) == [path.name]


def test_write_shard_failure_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / shard_name(0)
    write_shard(path, ["old"])
    with pytest.raises(pa.ArrowTypeError):
        write_shard(path, [1, 2])
    assert list(read_documents(path)) == ["old"]
    assert os.listdir(tmp_path) == [path.name]


def test_list_and_split_shards(tmp_path):
    for i in (2, 0, 1):
        write_shard(tmp_path / shard_name(i), [f"doc {i}"])
    (tmp_path / "shard_00003.parquet.tmp").write_bytes(b"partial download")
    (tmp_path / "notes.txt").write_text("not a shard")
    files = list_shards(tmp_path)
    assert [p.name for p in files] == [shard_name(0), shard_name(1), shard_name(2)]
    assert split_shards(files, "train") == files[:2]
    assert split_shards(files, "val") == files[2:]
    with pytest.raises(DataSourceError, match="at least 2"):
        split_shards(files[:1], "train")
    with pytest.raises(DataSourceError, match="unknown split"):
        split_shards(files, "test")


def test_parquet_without_text_column_is_rejected(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"content": ["a"]}), path)
    with pytest.raises(DataSourceError, match="no 'text' column"):
        list(read_documents(path))
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(DataSourceError, match="not strings"):
        list(read_documents(path))
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataSourceError, match="not a readable parquet file"):
        list(read_documents(path))


# ------------------------------------------------------------ default corpus


def test_default_corpus_layout_and_content(base, caplog):
    with caplog.at_level(logging.INFO, logger="flaxchat.train.data"):
        directory = ensure_default_corpus(num_train_shards=2, docs_per_shard=30)
    assert directory == base / "data" / "default_stories"
    assert "NOT real data" in caplog.text
    files = list_shards(directory)
    assert [p.name for p in files] == [shard_name(0), shard_name(1), shard_name(2)]
    train = [t for p in split_shards(files, "train") for t in read_documents(p)]
    val = [t for p in split_shards(files, "val") for t in read_documents(p)]
    assert train == generate_stories(DEFAULT_TRAIN_SEED, 60)
    assert val == generate_stories(DEFAULT_VAL_SEED, 30)
    assert not set(train) & set(val)
    assert sorted(os.listdir(directory.parent)) == ["default_stories"]  # no staging directories left


def test_default_corpus_is_reused_and_replaced_when_sizes_change(base):
    directory = ensure_default_corpus(num_train_shards=1, docs_per_shard=10)
    stamp = os.stat(directory / shard_name(0)).st_mtime_ns
    assert ensure_default_corpus(num_train_shards=1, docs_per_shard=10) == directory
    assert os.stat(directory / shard_name(0)).st_mtime_ns == stamp
    ensure_default_corpus(num_train_shards=3, docs_per_shard=5)
    assert [p.name for p in list_shards(directory)] == [shard_name(i) for i in range(4)]
    assert json.loads((directory / "corpus.json").read_text())["num_train_shards"] == 3
    (directory / shard_name(1)).unlink()  # a damaged corpus is regenerated too
    ensure_default_corpus(num_train_shards=3, docs_per_shard=5)
    assert len(list_shards(directory)) == 4


def test_spec_none_streams_the_default_corpus(monkeypatch):
    monkeypatch.setattr(sources, "ensure_default_corpus", lambda: ensure_default_corpus(2, 20))
    assert list(iter_documents(None, "train")) == generate_stories(DEFAULT_TRAIN_SEED, 40)
    assert list(iter_documents(None, "val")) == generate_stories(DEFAULT_VAL_SEED, 20)
    assert [p.name for p in resolve_files(None, "val")] == [shard_name(2)]


# ---------------------------------------------------------------- txt files


def test_txt_with_end_of_text_lines(tmp_path):
    path = write_lines(
        tmp_path / "s.txt",
        [
            "First story, line one.",
            "",
            "Still the first story.",
            "<|endoftext|>",
            "Second story.",
            " <|endoftext|> ",
            "<|endoftext|>",
            "Third story, no separator after it.",
        ],
    )
    assert list(read_documents(path)) == [
        "First story, line one.\n\nStill the first story.",
        "Second story.",
        "Third story, no separator after it.",
    ]


def test_txt_with_blank_lines(tmp_path):
    path = write_lines(tmp_path / "s.txt", ["", "Para one,", "second line.", "", "", "Para two.", "   ", "Para three."])
    assert list(read_documents(path)) == ["Para one,\nsecond line.", "Para two.", "Para three."]


def test_txt_separator_found_across_scan_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SCAN_BYTES", 8)  # the marker straddles chunk boundaries
    path = write_lines(tmp_path / "s.txt", ["abcde", "", "fgh", "<|endoftext|>", "ijk"])
    assert list(read_documents(path)) == ["abcde\n\nfgh", "ijk"]


def test_txt_not_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(DataSourceError, match="not UTF-8"):
        list(read_documents(path))


# -------------------------------------------------------------- jsonl files


def test_jsonl(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl", [json.dumps({"text": "one", "id": 1}), "", json.dumps({"text": "two\nlines"})]
    )
    assert list(read_documents(path)) == ["one", "two\nlines"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"content": "x"}), 'string "text" field'),
        (json.dumps({"text": 5}), 'string "text" field'),
        (json.dumps(["text"]), 'string "text" field'),
    ],
)
def test_jsonl_bad_line_names_file_and_line(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "ok"}), json.dumps({"text": "ok"}), bad_line])
    with pytest.raises(DataSourceError, match=message) as err:
        list(read_documents(path))
    assert f"{path}:3:" in str(err.value)


# --------------------------------------------------------- local spec rules


def test_single_file_split_is_disjoint_and_covers_everything(tmp_path):
    texts = docs("j", 250)
    path = write_lines(tmp_path / "only.jsonl", [json.dumps({"text": t}) for t in texts])
    train = list(iter_documents(str(path), "train"))
    val = list(iter_documents(str(path), "val"))
    assert val == [texts[i] for i in range(0, 250, HOLDOUT_EVERY)] == [texts[0], texts[100], texts[200]]
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(texts)
    assert train == [t for t in texts if t not in val]  # order kept
    assert resolve_files(str(path), "train") == resolve_files(str(path), "val") == [path]


def test_single_file_with_one_document_has_an_empty_train_split(tmp_path):
    path = write_lines(tmp_path / "one.txt", ["just one"])
    assert list(iter_documents(str(path), "val")) == ["just one"]
    with pytest.raises(DataSourceError, match="train split .* holds no documents"):
        list(iter_documents(str(path), "train"))


def test_directory_and_glob_use_the_last_file_as_val(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "a.parquet", docs("a", 3))
    write_lines(data / "b.txt", ["b one", "", "b two"])
    write_lines(data / "c.jsonl", [json.dumps({"text": "c one"})])
    (data / "README.md").write_text("ignored in a directory")
    assert list(iter_documents(str(data), "train")) == [*docs("a", 3), "b one", "b two"]
    assert list(iter_documents(str(data), "val")) == ["c one"]
    assert resolve_files(str(data / "*.[pt]*"), "val") == [data / "b.txt"]
    assert list(iter_documents(str(data / "*.[pt]*"), "train")) == docs("a", 3)


def test_home_directory_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_lines(tmp_path / "h.txt", ["a", "", "b"])
    assert list(iter_documents("~/h.txt", "val")) == ["a"]


@pytest.mark.parametrize(
    ("make", "spec", "message"),
    [
        (None, "missing/file.parquet", "no such file or directory"),
        (None, "nowhere/*.parquet", "no files match"),
        ("x.csv", "x.csv", "unsupported file type"),
        ("x.csv", "*.csv", "unsupported files"),
        ("sub/x.csv", "sub", "holds no .parquet, .txt, .jsonl files"),
        (None, "climbmix:lots", "bad data spec"),
    ],
)
def test_bad_specs_raise_at_once(tmp_path, monkeypatch, make, spec, message):
    monkeypatch.chdir(tmp_path)
    if make:
        (tmp_path / make).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / make).write_text("a,b\n")
    with pytest.raises(DataSourceError, match=message):
        iter_documents(spec)  # no next(): resolution is eager


def test_bad_split():
    with pytest.raises(DataSourceError, match="unknown split"):
        iter_documents("anything", "validation")


# ------------------------------------------------- named sources, offline


def test_tinystories_already_downloaded_needs_no_network():
    directory = tinystories_dir()
    directory.mkdir(parents=True)
    (directory / TINYSTORIES_FILES["val"]).write_text("Story one.\n<|endoftext|>\nStory two.\n<|endoftext|>\n")
    assert list(iter_documents("tinystories", "val")) == ["Story one.", "Story two."]
    assert resolve_files("tinystories", "val") == [directory / "TinyStories-valid.txt"]


def test_climbmix_uses_the_shards_present():
    directory = climbmix_dir()
    for i in (0, 1, 6542):
        write_shard(directory / shard_name(i), [f"climb {i}"])
    assert list(iter_documents("climbmix", "train")) == ["climb 0", "climb 1"]
    assert list(iter_documents("climbmix", "val")) == ["climb 6542"]
    assert list(iter_documents("climbmix:1", "train")) == ["climb 0"]
    assert list(iter_documents("climbmix:2", "val")) == ["climb 6542"]
