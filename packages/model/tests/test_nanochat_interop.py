import jax
import numpy as np
import pytest
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.model.nanochat_interop import (
    InteropError,
    export_nanochat,
    from_nanochat_state_dict,
    import_nanochat,
    to_nanochat_state_dict,
)
from flaxchat.model.params import named_params

CFG = GPTConfig(sequence_len=64, vocab_size=100, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, window_pattern="SL")


def test_names_and_shapes_are_nanochats():
    state = to_nanochat_state_dict(GPT(CFG, rngs=nnx.Rngs(0)))
    expected = {
        "transformer.wte.weight": (128, 64),
        "lm_head.weight": (128, 64),
        "resid_lambdas": (3,),
        "x0_lambdas": (3,),
        "smear_gate.weight": (1, 24),
        "smear_lambda": (1,),
        "backout_lambda": (1,),
        "value_embeds.0.weight": (128, 32),
        "value_embeds.2.weight": (128, 32),
        "transformer.h.0.attn.ve_gate.weight": (2, 12),
        "transformer.h.2.attn.ve_gate.weight": (2, 12),
    }
    for i in range(3):
        expected |= {
            f"transformer.h.{i}.attn.c_q.weight": (64, 64),
            f"transformer.h.{i}.attn.c_k.weight": (32, 64),
            f"transformer.h.{i}.attn.c_v.weight": (32, 64),
            f"transformer.h.{i}.attn.c_proj.weight": (64, 64),
            f"transformer.h.{i}.mlp.c_fc.weight": (256, 64),
            f"transformer.h.{i}.mlp.c_proj.weight": (64, 256),
        }
    assert {k: v.shape for k, v in state.items()} == expected


def test_linear_layout_is_out_in():
    model = GPT(CFG, rngs=nnx.Rngs(0))
    state = to_nanochat_state_dict(model)
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    torch_style = x @ state["transformer.h.1.mlp.c_fc.weight"].T
    np.testing.assert_allclose(torch_style, np.asarray(x @ model.blocks[1].mlp.c_fc[...]), rtol=1e-5, atol=1e-6)


def test_safetensors_round_trip(tmp_path):
    model = GPT(CFG, rngs=nnx.Rngs(1))
    export_nanochat(model, tmp_path / "m.safetensors")
    back = import_nanochat(tmp_path / "m.safetensors")
    assert back.config == CFG
    a, b = named_params(model), named_params(back)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    idx = jax.numpy.arange(20)[None] % 100
    np.testing.assert_array_equal(np.asarray(model(idx)), np.asarray(back(idx)))


def test_orig_mod_prefix_is_stripped_and_errors_are_clear(tmp_path):
    state = to_nanochat_state_dict(GPT(CFG, rngs=nnx.Rngs(0)))
    prefixed = {"_orig_mod." + k: v for k, v in state.items()}
    assert from_nanochat_state_dict(prefixed, CFG).config == CFG
    with pytest.raises(InteropError, match="missing"):
        from_nanochat_state_dict({k: v for k, v in state.items() if k != "lm_head.weight"}, CFG)
    with pytest.raises(InteropError, match="does not use"):
        from_nanochat_state_dict({**state, "extra.weight": np.zeros(3)}, CFG)
    with pytest.raises(InteropError, match="relu2"):
        to_nanochat_state_dict(GPT(CFG.replace(mlp="gelu"), rngs=nnx.Rngs(0)))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InteropError, match="not a readable safetensors"):
        import_nanochat(tmp_path / "bad.safetensors")


def test_tied_model_exports_head_as_wte_copy():
    tied = GPT(CFG.replace(tie_embeddings=True), rngs=nnx.Rngs(0))
    state = to_nanochat_state_dict(tied)
    np.testing.assert_array_equal(state["lm_head.weight"], state["transformer.wte.weight"])
    untied = from_nanochat_state_dict(state, CFG)
    idx = jax.numpy.arange(10)[None]
    np.testing.assert_allclose(np.asarray(untied(idx)), np.asarray(tied(idx)), atol=1e-6)
