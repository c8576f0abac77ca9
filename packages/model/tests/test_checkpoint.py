import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.model.checkpoint import CheckpointError, load_checkpoint, read_meta, resolve_checkpoint, save_checkpoint
from flaxchat.model.params import named_params
from flaxchat.tokenizer import Tokenizer

TEXT = "The cat sat on the mat. A dog ran to the park and the cat ran too. " * 40


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train([TEXT, "Numbers 12345 and words, words, words!"], vocab_size=300)


@pytest.fixture
def model(tokenizer):
    cfg = GPTConfig(sequence_len=64, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
    return GPT(cfg, rngs=nnx.Rngs(3))


def test_round_trip_is_exact(tmp_path, model, tokenizer):
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"step": 7, "val_bpb": 1.25})
    loaded, tok, meta = load_checkpoint(path)
    assert meta == {"step": 7, "val_bpb": 1.25}
    assert loaded.config == model.config
    assert tok.encode(TEXT[:80]) == tokenizer.encode(TEXT[:80])
    a, b = named_params(model), named_params(loaded)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    idx = jax.numpy.array([tokenizer.encode(TEXT[:60])])
    np.testing.assert_array_equal(np.asarray(model(idx)), np.asarray(loaded(idx)))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dirs left behind


def test_overwrite_replaces_atomically(tmp_path, model, tokenizer):
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"step": 1})
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, {"step": 2})
    assert read_meta(tmp_path / "ckpt")["metadata"] == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_resolve_by_name_under_base_dir(tmp_path, model, tokenizer, monkeypatch):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path))
    assert resolve_checkpoint("d4") == tmp_path / "models" / "d4"
    save_checkpoint(resolve_checkpoint("d4"), model, tokenizer)
    assert load_checkpoint("d4")[0].config == model.config


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="no model checkpoint .*apps/pretrain"):
        load_checkpoint(tmp_path / "nothing")


def test_truncated_weights_are_rejected(tmp_path, model, tokenizer):
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: os.path.getsize(weights) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(path)


def test_config_that_does_not_match_the_weights_is_rejected(tmp_path, model, tokenizer):
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    model.config.replace(n_embd=64).save(path / "config.json")
    with pytest.raises(CheckpointError, match="does not match the model config"):
        load_checkpoint(path)
    model.config.replace(n_layer=3).save(path / "config.json")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_damaged_meta_tokenizer_and_vocab_mismatch(tmp_path, model, tokenizer):
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)
    (path / "meta.json").write_text(json.dumps(meta))
    (path / "tokenizer" / "tokenizer.json").write_text("garbage")
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_checkpoint(path)
    other = GPT(model.config.replace(vocab_size=400), rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointError, match="vocab"):
        save_checkpoint(tmp_path / "x", other, tokenizer)
    assert not (tmp_path / "x").exists()
