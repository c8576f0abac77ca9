"""Saving/loading tokenizer directories and finding stock encodings offline."""

import hashlib
import json

import numpy as np
import pytest

from flaxchat.tokenizer import Tokenizer, TokenizerFileError, base_dir, files, find_stock_file, stock, tokenizer_dir

SAMPLES = ["hello world", "naïve café 你好 🙂", "12345 def f(x):\n    return x", "<|bos|> literal"]


@pytest.fixture
def saved(tok, tmp_path):
    return tok.save(tmp_path / "tok")


def test_save_load_round_trip(tok, saved):
    loaded = Tokenizer.load(saved)
    assert sorted(p.name for p in saved.iterdir()) == ["tokenizer.json", "tokenizer.tiktoken"]
    assert [loaded.encode(t) for t in SAMPLES] == [tok.encode(t) for t in SAMPLES]
    assert loaded.vocab_size == tok.vocab_size and loaded.bos_id == tok.bos_id
    assert loaded.spec.special_tokens == tok.spec.special_tokens
    assert np.array_equal(loaded.token_bytes(), tok.token_bytes())
    meta = json.loads((saved / "tokenizer.json").read_text())
    assert meta["ranks_sha256"] == hashlib.sha256((saved / "tokenizer.tiktoken").read_bytes()).hexdigest()
    assert list(meta["special_tokens"].values()) == list(range(tok.bos_id, tok.vocab_size))


def test_ranks_file_is_tiktoken_format(tok, saved):
    import tiktoken.load

    assert tiktoken.load.load_tiktoken_bpe(str(saved / "tokenizer.tiktoken")) == tok.spec.ranks


def test_save_replaces_and_leaves_no_temp_dirs(tok, saved):
    tok.save(saved)  # over an existing tokenizer
    assert Tokenizer.load(saved).encode(SAMPLES[1]) == tok.encode(SAMPLES[1])
    assert [p.name for p in saved.parent.iterdir()] == ["tok"]


def test_save_refuses_foreign_directory(tok, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(TokenizerFileError, match="other files"):
        tok.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_failed_save_keeps_old_tokenizer(tok, saved, monkeypatch):
    other = Tokenizer.train(["abc abd abe"] * 4, vocab_size=268)

    def boom(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(files, "_write_synced", boom)
    with pytest.raises(OSError, match="disk full"):
        other.save(saved)
    monkeypatch.undo()
    assert Tokenizer.load(saved).vocab_size == tok.vocab_size
    assert [p.name for p in saved.parent.iterdir()] == ["tok"]


def _rewrite_json(path, **changes):
    meta = json.loads((path / "tokenizer.json").read_text())
    meta.update(changes)
    (path / "tokenizer.json").write_text(json.dumps(meta))


def _corrupt(saved, how):
    ranks = saved / "tokenizer.tiktoken"
    if how == "missing dir":
        return saved.parent / "nothing-here"
    if how == "missing ranks":
        ranks.unlink()
    elif how == "missing json":
        (saved / "tokenizer.json").unlink()
    elif how == "truncated ranks":
        ranks.write_bytes(ranks.read_bytes()[:-20])
    elif how == "tampered checksum":
        _rewrite_json(saved, ranks_sha256="0" * 64)
    elif how == "bad json":
        (saved / "tokenizer.json").write_text("{not json")
    elif how == "wrong version":
        _rewrite_json(saved, format_version=99)
    elif how == "missing field":
        _rewrite_json(saved, pattern=None)
    elif how == "bad pattern":
        _rewrite_json(saved, pattern="(")
    elif how == "wrong vocab size":
        _rewrite_json(saved, vocab_size=5)
    elif how in ("bad base64", "duplicate id"):
        # corrupt content with a matching checksum: the parser/validator must catch it
        lines = ranks.read_bytes().splitlines()
        lines[280] = b"!!notbase64 280" if how == "bad base64" else lines[280].split()[0] + b" 279"
        data = b"\n".join(lines) + b"\n"
        ranks.write_bytes(data)
        _rewrite_json(saved, ranks_sha256=hashlib.sha256(data).hexdigest())
    return saved


@pytest.mark.parametrize("how, message", [
    ("missing dir", "no tokenizer directory"),
    ("missing ranks", "file not found"),
    ("missing json", "file not found"),
    ("truncated ranks", "checksum mismatch"),
    ("tampered checksum", "checksum mismatch"),
    ("bad json", "not valid JSON"),
    ("wrong version", "format_version 99"),
    ("missing field", "'pattern'"),
    ("wrong vocab size", "vocab_size says 5"),
    ("bad pattern", "tiktoken cannot build"),
    ("bad base64", "line 281"),
    ("duplicate id", "share an id"),
])
def test_load_errors(saved, how, message):
    path = _corrupt(saved, how)
    with pytest.raises(TokenizerFileError, match=message) as info:
        Tokenizer.load(path)
    assert str(path) in str(info.value) and "apps/tok_train" in str(info.value)


def test_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path))
    assert base_dir() == tmp_path
    assert tokenizer_dir() == tmp_path / "tokenizers" / "default"
    assert tokenizer_dir("small") == tmp_path / "tokenizers" / "small"
    monkeypatch.delenv("FLAXCHAT_BASE_DIR")
    assert str(base_dir()).endswith(".cache/flaxchat")


def test_stock_lookup_is_offline_and_checksummed(monkeypatch, tmp_path, tok, saved):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(stock, "_packaged_file", lambda package, relpath: None)
    assert find_stock_file("gpt2") is None and find_stock_file("cl100k_base") is None
    # a cached copy under tiktoken's key is considered, but a wrong checksum means "not available"
    cached = tmp_path / "cache" / hashlib.sha1(stock.STOCK_ENCODINGS["gpt2"].url.encode()).hexdigest()
    cached.parent.mkdir()
    cached.write_bytes((saved / "tokenizer.tiktoken").read_bytes())
    assert stock.candidate_files("gpt2") == [cached]
    assert find_stock_file("gpt2") is None
    with pytest.raises(TokenizerFileError, match="checksum mismatch"):
        Tokenizer.from_tiktoken_file(cached, "gpt2")
    with pytest.raises(ValueError, match="unknown stock encoding"):
        find_stock_file("gpt5")
