"""apps/tok_train end to end: train on the embedded corpus in a subprocess, then load what it saved."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flaxchat.tokenizer import Tokenizer

APP = Path(__file__).resolve().parents[1] / "apps" / "tok_train"


def run_app(base_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    # empty TIKTOKEN_CACHE_DIR: never look at (or write) a shared tiktoken cache
    env = {**os.environ, "FLAXCHAT_BASE_DIR": str(base_dir), "TIKTOKEN_CACHE_DIR": ""}
    return subprocess.run([sys.executable, str(APP), *flags], check=False, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("base")  # shared: the default corpus is generated once


def test_help(tmp_path):
    result = run_app(tmp_path, "--help")
    assert result.returncode == 0
    assert all(flag in result.stdout for flag in ["--vocab-size", "--max-chars", "--doc-cap", "--data", "--name"])


def test_trains_saves_and_compares(base):
    result = run_app(base, "--vocab-size", "512", "--max-chars", "300000", "--name", "small")
    assert result.returncode == 0, result.stderr
    tok = Tokenizer.load(base / "tokenizers" / "small")
    assert tok.vocab_size == 512
    text = "Once upon a time, a little fox found a shiny red ball. 🦊"
    ids = tok.encode(text, prepend="<|bos|>")
    assert ids[0] == tok.bos_id and tok.decode(ids[1:]) == text
    lines = result.stdout.splitlines()
    # reading stops with the document that crosses --max-chars (stories are far shorter than --doc-cap)
    n_chars = int(re.search(r"read ([\d,]+) chars, [\d,]+ docs in total", result.stdout).group(1).replace(",", ""))
    assert 300_000 < n_chars < 300_000 + 10_000
    for name in ["news", "korean", "code", "math", "science", "val"]:
        assert any(line.startswith(name) for line in lines), name
    for label, n_vocab in [("GPT-2", 50257), ("GPT-4", 100277)]:  # compared if found offline, else skipped
        assert f"skipped {label} comparison: encoding not available offline" in lines or f"{label} {n_vocab:,}" in result.stdout


def test_unreachable_vocab_size_says_what_to_do(base):
    result = run_app(base, "--vocab-size", "100000", "--max-chars", "20000", "--name", "huge")
    assert result.returncode == 1
    assert "--vocab-size" in result.stderr and "only supports" in result.stderr
    assert not (base / "tokenizers" / "huge").exists()


def test_bad_data_path_is_a_clear_error(tmp_path):
    result = run_app(tmp_path, "--data", str(tmp_path / "missing.parquet"), "--vocab-size", "300")
    assert result.returncode == 1
    assert "no such file or directory" in result.stderr and "Traceback" not in result.stderr
