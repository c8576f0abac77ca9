"""Move weights between flaxchat and nanochat (PyTorch state-dict names and layout) as safetensors.

nanochat stores every Linear weight as (out, in); flaxchat kernels are (in, out). The
nanochat GPTConfig travels in the safetensors metadata under "model_config", so an exported
file is self-contained. nanochat's own `.pt` checkpoints can be converted to safetensors
with `safetensors.torch.save_file(torch.load(path), out)` and then imported here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.model.config import GPTConfig
from flaxchat.model.gpt import GPT
from flaxchat.model.params import ParamMismatchError, assign_params, named_params

NANOCHAT_CONFIG_KEYS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "window_pattern")

# (flaxchat name pattern, nanochat name template, transpose?)
_RULES = (
    (r"wte", "transformer.wte.weight", False),
    (r"lm_head", "lm_head.weight", True),
    (r"blocks\.(\d+)\.attn\.(c_q|c_k|c_v|c_proj|ve_gate)", "transformer.h.{0}.attn.{1}.weight", True),
    (r"blocks\.(\d+)\.mlp\.(c_fc|c_proj)", "transformer.h.{0}.mlp.{1}.weight", True),
    (r"value_embeds\.(\d+)", "value_embeds.{0}.weight", False),
    (r"smear_gate", "smear_gate.weight", True),
    (r"(resid_lambdas|x0_lambdas|smear_lambda|backout_lambda)", "{0}", False),
)


class InteropError(ValueError):
    """Weights cannot be converted between flaxchat and nanochat."""


def _to_nanochat_name(name: str) -> tuple[str, bool]:
    for pattern, template, transpose in _RULES:
        match = re.fullmatch(pattern, name)
        if match:
            return template.format(*match.groups()), transpose
    raise InteropError(f"no nanochat name for flaxchat parameter {name!r}")


def _check_expressible(config: GPTConfig) -> None:
    if config.mlp != "relu2":
        raise InteropError(f"nanochat only has the relu2 MLP; this model uses mlp={config.mlp!r}")
    if config.pad_vocab_to != 64 or config.rope_base != 100000.0 or config.softcap != 15.0:
        raise InteropError("nanochat fixes pad_vocab_to=64, rope_base=100000 and softcap=15; this model differs")


def to_nanochat_state_dict(model: GPT) -> dict[str, np.ndarray]:
    """nanochat state-dict names and (out, in) layouts; a tied head is written out as a copy of wte."""
    _check_expressible(model.config)
    out = {}
    for name, value in named_params(model).items():
        key, transpose = _to_nanochat_name(name)
        array = np.asarray(value, dtype=np.float32)
        out[key] = np.ascontiguousarray(array.T) if transpose else array
    if model.config.tie_embeddings:
        out["lm_head.weight"] = out["transformer.wte.weight"].copy()
    return out


def export_nanochat(model: GPT, path: str | Path) -> None:
    from safetensors.numpy import save_file

    config = {k: getattr(model.config, k) for k in NANOCHAT_CONFIG_KEYS}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(to_nanochat_state_dict(model), str(tmp), metadata={"model_config": json.dumps(config)})
    tmp.replace(path)


def from_nanochat_state_dict(state: dict[str, object], config: GPTConfig, *, dtype=jnp.float32) -> GPT:
    _check_expressible(config)
    if config.tie_embeddings:
        raise InteropError("nanochat models have an untied head: import with tie_embeddings=False")
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    model = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0), dtype=dtype))
    arrays = {}
    for name in named_params(model):
        key, transpose = _to_nanochat_name(name)
        if key in state:
            array = np.asarray(jnp.asarray(state[key], jnp.float32))
            arrays[name] = array.T if transpose else array
    try:
        assign_params(model, arrays, source="nanochat state dict")
    except ParamMismatchError as e:
        raise InteropError(str(e)) from None
    extra = sorted(set(state) - {_to_nanochat_name(n)[0] for n in arrays})
    if extra:
        raise InteropError(f"nanochat state dict has entries this config does not use: {extra[:5]}")
    return model


def import_nanochat(path: str | Path, config: GPTConfig | None = None, *, dtype=jnp.float32) -> GPT:
    """Load a nanochat-layout safetensors file; the config comes from its metadata unless given."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InteropError(f"no such file: {path}")
    try:
        with safe_open(str(path), framework="flax") as f:  # flax arrays can be bf16
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise InteropError(f"{path} is not a readable safetensors file: {e}") from None
    if config is None:
        if "model_config" not in metadata:
            raise InteropError(f"{path} carries no model_config metadata: pass the nanochat config explicitly")
        config = GPTConfig.from_dict(json.loads(metadata["model_config"]))
    return from_nanochat_state_dict(state, config, dtype=dtype)
