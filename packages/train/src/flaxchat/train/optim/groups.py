"""nanochat's parameter groups (GPT.setup_optimizer) and the combined Muon + AdamW optimizer.

Every parameter name (dot-joined nnx path, e.g. "blocks.3.attn.c_q") matches exactly one
rule of GROUP_RULES; anything else is an error, never a silent default. The optimizer is an
optax transformation over the same pytree as the parameters (the nnx.State of nnx.Param, or
a plain dict), with its own schedule step in the state, so the whole update jits once:

    tx = build_optimizer(params, model_config, OptimizerConfig(), pretrain_schedules(n))
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)   # inside jax.jit
    params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flaxchat.model.config import GPTConfig
from flaxchat.model.params import path_name
from flaxchat.train.optim.muon import POLAR_EXPRESS_COEFFS, muon_optimizer
from flaxchat.train.optim.schedules import Hyperparams, Schedules

ADAMW, MUON = "adamw", "muon"
ADAMW_EPS = 1e-10
SCALAR_GATE_LR = 0.2  # smear/backout scalars: fixed, neither batch- nor width-scaled
REFERENCE_WIDTH = 768  # AdamW LRs were tuned at n_embd 768 and scale as 1/sqrt(width)

# (group, pattern), in nanochat's group order. Patterns must match the whole name.
GROUP_RULES: tuple[tuple[str, str], ...] = (
    ("lm_head", r"lm_head"),
    ("wte", r"wte"),
    ("value_embeds", r"value_embeds\.\d+"),
    ("resid_lambdas", r"resid_lambdas"),
    ("x0_lambdas", r"x0_lambdas"),
    ("scalar_gates", r"smear_gate|smear_lambda|backout_lambda"),
    ("matrices", r"blocks\.\d+\..+"),  # everything inside the transformer blocks, ve_gate included
)
_COMPILED_RULES = tuple((group, re.compile(pattern)) for group, pattern in GROUP_RULES)


class OptimizerConfigError(ValueError):
    """An OptimizerConfig field is out of range."""


class UnknownParameterError(ValueError):
    """A parameter name matches no optimizer group."""


class OptimizerUsageError(ValueError):
    """The optimizer was called without what it needs (e.g. params for weight decay)."""


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Learning rates before batch and width scaling (base_train's flag defaults).

    weight_decay is the Muon decay at schedule multiplier 1 (base_train passes
    scaling.scaled_weight_decay(...)); the AdamW decays are nanochat's fixed constants.
    batch_lr_scale (scaling.batch_lr_scale) multiplies the embedding, unembedding, scalar and
    matrix LRs. compute_dtype "bfloat16" orthogonalizes in bf16, as nanochat on bf16 GPUs.
    """

    embedding_lr: float = 0.3
    unembedding_lr: float = 0.008
    matrix_lr: float = 0.02
    scalar_lr: float = 0.5
    weight_decay: float = 0.28
    batch_lr_scale: float = 1.0
    muon_beta2: float = 0.9
    ns_steps: int = 5
    compute_dtype: str = "float32"

    def __post_init__(self):
        for name in ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr", "weight_decay"):
            if getattr(self, name) < 0:
                raise OptimizerConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_lr_scale <= 0:
            raise OptimizerConfigError(f"batch_lr_scale must be positive, got {self.batch_lr_scale}")
        if not 0.0 <= self.muon_beta2 < 1.0:
            raise OptimizerConfigError(f"muon_beta2 must be in [0, 1), got {self.muon_beta2}")
        if not 1 <= self.ns_steps <= len(POLAR_EXPRESS_COEFFS):
            raise OptimizerConfigError(f"ns_steps must be in 1..{len(POLAR_EXPRESS_COEFFS)}, got {self.ns_steps}")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise OptimizerConfigError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    name: str
    kind: str  # ADAMW or MUON
    lr: float  # before the schedule's multiplier
    weight_decay: float  # Muon: before the schedule's multiplier; AdamW: constant
    betas: tuple[float, float] | None = None  # AdamW only


def param_groups(model_config: GPTConfig, opt: OptimizerConfig) -> dict[str, ParamGroup]:
    """nanochat's setup_optimizer table, with batch scaling applied as base_train does."""
    width_scale = (model_config.n_embd / REFERENCE_WIDTH) ** -0.5
    # Same operation order as nanochat (batch scale first, then width) for identical doubles.
    embedding_lr = opt.embedding_lr * opt.batch_lr_scale
    scalar_lr = opt.scalar_lr * opt.batch_lr_scale
    groups = (
        ParamGroup("lm_head", ADAMW, opt.unembedding_lr * opt.batch_lr_scale * width_scale, 0.01, (0.8, 0.96)),
        ParamGroup("wte", ADAMW, embedding_lr * width_scale, 0.001, (0.8, 0.995)),
        ParamGroup("value_embeds", ADAMW, embedding_lr * width_scale * 0.5, 0.01, (0.8, 0.995)),
        ParamGroup("resid_lambdas", ADAMW, scalar_lr * 0.01, 0.05, (0.8, 0.95)),
        ParamGroup("x0_lambdas", ADAMW, scalar_lr, 0.0, (0.96, 0.95)),
        ParamGroup("scalar_gates", ADAMW, SCALAR_GATE_LR, 0.0, (0.8, 0.95)),
        ParamGroup("matrices", MUON, opt.matrix_lr * opt.batch_lr_scale, opt.weight_decay),
    )
    return {g.name: g for g in groups}


def group_of(name: str) -> str:
    """The group of one dot-joined parameter name; UnknownParameterError if none matches."""
    for group, pattern in _COMPILED_RULES:
        if pattern.fullmatch(name):
            return group
    raise UnknownParameterError(
        f"parameter {name!r} belongs to no optimizer group; known patterns: "
        + ", ".join(f"{g}: {p}" for g, p in GROUP_RULES)
        + ". Add a rule to GROUP_RULES in flaxchat.train.optim.groups for new parameters."
    )


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def param_names(params) -> dict[str, object]:
    """Dot-joined name -> array (or ShapeDtypeStruct) for a parameter pytree (nnx.State or nested dict)."""
    flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_variable)[0]
    return {
        path_name(path): leaf.get_value() if _is_variable(leaf) else leaf for path, leaf in flat
    }


def param_labels(params):
    """A pytree (a prefix of `params`: nnx Variables become leaves) of group names."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: group_of(path_name(path)), params, is_leaf=_is_variable
    )


class MuonAdamWState(NamedTuple):
    step: jax.Array  # int32: the schedules' step (nanochat's `it`); AdamW bias corrections keep their own counts
    groups: optax.PartitionState


def _scale_by_scheduled_lr(lr: float) -> optax.GradientTransformationExtraArgs:
    def update(updates, state, params=None, *, hyperparams: Hyperparams, **extra_args):
        scale = lr * hyperparams.lr_multiplier
        return jax.tree.map(lambda u: (scale * u).astype(u.dtype), updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def _group_transform(group: ParamGroup, opt: OptimizerConfig) -> optax.GradientTransformation:
    if group.kind == MUON:
        return muon_optimizer(
            group.lr, group.weight_decay, beta2=opt.muon_beta2, ns_steps=opt.ns_steps, compute_dtype=opt.compute_dtype
        )
    b1, b2 = group.betas
    # optax.adamw at lr 1 gives -(m_hat / (sqrt(v_hat) + eps) + wd * p); times the scheduled lr this is
    # torch's AdamW: p *= 1 - lr*wd, then p -= lr * m_hat / (sqrt(v_hat) + eps).
    return optax.chain(
        optax.adamw(learning_rate=1.0, b1=b1, b2=b2, eps=ADAMW_EPS, weight_decay=group.weight_decay),
        _scale_by_scheduled_lr(group.lr),
    )


def build_optimizer(
    params, model_config: GPTConfig, opt_config: OptimizerConfig, schedules: Schedules
) -> optax.GradientTransformationExtraArgs:
    """The combined optimizer for a parameter pytree (real or abstract arrays).

    `update(grads, state, params, progress=None)`: params are required (weight decay);
    progress in [0, 1] is passed to the schedules (needed by sft_schedules only).
    """
    param_labels(params)  # unknown names fail here, before anything is traced
    groups = param_groups(model_config, opt_config)
    inner = optax.partition({name: _group_transform(g, opt_config) for name, g in groups.items()}, param_labels)

    def init(params):
        return MuonAdamWState(step=jnp.zeros([], jnp.int32), groups=inner.init(params))

    def update(grads, state, params=None, *, progress=None, **extra_args):
        if params is None:
            raise OptimizerUsageError("the Muon/AdamW update needs params: call tx.update(grads, state, params)")
        hyperparams = schedules.at(state.step, progress)
        updates, groups_state = inner.update(grads, state.groups, params, hyperparams=hyperparams)
        return updates, MuonAdamWState(step=optax.safe_increment(state.step), groups=groups_state)

    return optax.GradientTransformationExtraArgs(init, update)


def restart_schedules(state: MuonAdamWState) -> MuonAdamWState:
    """Schedules start over at step 0; moments, buffers and AdamW step counts are kept.

    nanochat's SFT warm-starts from the base run's optimizer state this way.
    """
    return state._replace(step=jnp.zeros_like(state.step))
