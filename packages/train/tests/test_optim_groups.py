"""Parameter groups: every real parameter in exactly one group, nanochat's learning rates, clear errors."""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.train.optim import (
    GROUP_RULES,
    OptimizerConfig,
    OptimizerConfigError,
    UnknownParameterError,
    batch_lr_scale,
    build_optimizer,
    group_of,
    param_groups,
    param_labels,
    param_names,
    pretrain_schedules,
)

CONFIGS = {
    "gqa": GPTConfig(sequence_len=64, vocab_size=100, n_layer=3, n_head=4, n_kv_head=2, n_embd=64, window_pattern="S"),
    "tied": GPTConfig(
        sequence_len=64, vocab_size=100, n_layer=2, n_head=2, n_kv_head=2, n_embd=48, tie_embeddings=True
    ),
    "d12": GPTConfig.from_depth(12),
    "d20": GPTConfig.from_depth(20),
}


def abstract_params(config):
    return nnx.state(nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0))), nnx.Param)


def nanochat_group(name):
    """Which nanochat group holds the parameter (setup_optimizer), written out by hand."""
    if name in ("lm_head", "wte", "resid_lambdas", "x0_lambdas"):
        return name
    if re.fullmatch(r"value_embeds\.\d+", name):
        return "value_embeds"
    if name in ("smear_gate", "smear_lambda", "backout_lambda"):
        return "scalar_gates"
    if re.fullmatch(r"blocks\.\d+\.(attn\.(c_q|c_k|c_v|c_proj|ve_gate)|mlp\.(c_fc|c_proj))", name):
        return "matrices"
    raise AssertionError(f"unexpected parameter {name}")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_parameter_in_exactly_one_group(name):
    config = CONFIGS[name]
    names = param_names(abstract_params(config))
    assert ("lm_head" in names) == (not config.tie_embeddings)
    assert sum(n.endswith("ve_gate") for n in names) == len(config.value_embed_layers) > 0
    for n in names:
        assert sum(bool(re.fullmatch(pattern, n)) for _, pattern in GROUP_RULES) == 1, n
        assert group_of(n) == nanochat_group(n), n


def test_labels_follow_the_param_tree():
    params = abstract_params(CONFIGS["gqa"])
    labels = param_labels(params)
    assert labels["blocks"][0]["attn"]["ve_gate"] == "matrices"
    assert labels["value_embeds"]["0"] == "value_embeds"
    assert labels["smear_lambda"] == "scalar_gates"
    # Plain nested dicts (nnx.to_pure_dict) name parameters the same way.
    pure = nnx.to_pure_dict(params)
    assert set(param_names(pure)) == set(param_names(params))


def test_d20_reference_learning_rates():
    groups = param_groups(CONFIGS["d20"], OptimizerConfig(batch_lr_scale=batch_lr_scale(1_048_576)))
    expected = {
        "lm_head": 0.0087636,
        "wte": 0.3286335,
        "value_embeds": 0.1643168,
        "resid_lambdas": 0.0070711,
        "x0_lambdas": 0.7071068,
        "scalar_gates": 0.2,
        "matrices": 0.0282843,
    }
    assert list(groups) == list(expected)  # nanochat's group order
    for name, lr in expected.items():
        assert groups[name].lr == pytest.approx(lr, abs=5e-8), name
    assert [g.kind for g in groups.values()] == ["adamw"] * 6 + ["muon"]


def test_group_hyperparameters():
    opt = OptimizerConfig(embedding_lr=0.2, unembedding_lr=0.004, matrix_lr=0.02, scalar_lr=0.5, weight_decay=0.0123)
    groups = param_groups(GPTConfig.from_depth(6, head_dim=64), opt)  # runcpu width 384
    width = (384 / 768) ** -0.5
    assert groups["wte"].lr == pytest.approx(0.2 * width)
    assert groups["lm_head"].lr == pytest.approx(0.004 * width)
    assert groups["value_embeds"].lr == pytest.approx(0.1 * width)
    assert groups["scalar_gates"].lr == 0.2  # neither width- nor batch-scaled
    assert {n: g.betas for n, g in groups.items()} == {
        "lm_head": (0.8, 0.96),
        "wte": (0.8, 0.995),
        "value_embeds": (0.8, 0.995),
        "resid_lambdas": (0.8, 0.95),
        "x0_lambdas": (0.96, 0.95),
        "scalar_gates": (0.8, 0.95),
        "matrices": None,
    }
    assert {n: g.weight_decay for n, g in groups.items()} == {
        "lm_head": 0.01,
        "wte": 0.001,
        "value_embeds": 0.01,
        "resid_lambdas": 0.05,
        "x0_lambdas": 0.0,
        "scalar_gates": 0.0,
        "matrices": 0.0123,
    }
    # The batch scale reaches every group but the fixed scalar gates; the width scale only AdamW.
    scaled = param_groups(GPTConfig.from_depth(6, head_dim=64), dataclasses.replace(opt, batch_lr_scale=0.25))
    for name in groups:
        assert scaled[name].lr == pytest.approx(groups[name].lr * (1.0 if name == "scalar_gates" else 0.25))


def test_abstract_d20_state_follows_nanochat_buffer_shapes():
    config = CONFIGS["d20"]
    params = abstract_params(config)
    tx = build_optimizer(params, config, OptimizerConfig(), pretrain_schedules(100))
    state = jax.eval_shape(tx.init, params)
    muon_state = state.groups.inner_states["matrices"].inner_state
    variance = {n: v.shape for n, v in param_names(muon_state.variance).items() if hasattr(v, "shape")}
    c = config.n_embd
    # nanochat: (out, 1) when out >= in, else (1, in); stored transposed like the Flax kernel.
    assert variance["blocks.0.mlp.c_fc"] == (1, 4 * c)  # (4C, C) is tall
    assert variance["blocks.0.mlp.c_proj"] == (4 * c, 1)  # (C, 4C) is wide
    assert variance["blocks.0.attn.c_q"] == (1, c)  # square reduces per output row
    assert variance["blocks.1.attn.ve_gate"] == (12, 1)  # (n_kv_head, 12) is wide
    assert len(variance) == sum(n.startswith("blocks.") for n in param_names(params))
    assert state.step.dtype == jnp.int32


def test_unknown_parameter_is_an_error():
    for bad in ("blocks", "value_embeds.x", "lm_head.bias", "final_norm"):
        with pytest.raises(UnknownParameterError, match=re.escape(repr(bad))):
            group_of(bad)
    params = {"wte": jnp.zeros((8, 4)), "extra_head": jnp.zeros((4, 8))}
    with pytest.raises(UnknownParameterError, match="extra_head"):
        build_optimizer(params, CONFIGS["gqa"], OptimizerConfig(), pretrain_schedules(10))


@pytest.mark.parametrize(
    "field, value",
    [
        ("matrix_lr", -0.1),
        ("weight_decay", -1.0),
        ("batch_lr_scale", 0.0),
        ("muon_beta2", 1.0),
        ("ns_steps", 0),
        ("compute_dtype", "float16"),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(OptimizerConfigError, match=field):
        OptimizerConfig(**{field: value})


def test_config_defaults_are_base_train_flags():
    opt = OptimizerConfig()
    assert (opt.embedding_lr, opt.unembedding_lr, opt.matrix_lr, opt.scalar_lr, opt.weight_decay) == (
        0.3,
        0.008,
        0.02,
        0.5,
        0.28,
    )
    assert (opt.muon_beta2, opt.ns_steps, opt.batch_lr_scale) == (0.9, 5, 1.0)
    assert math.isclose(param_groups(CONFIGS["d12"], opt)["wte"].lr, 0.3)  # width 768: no width scaling
