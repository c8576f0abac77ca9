"""Flat, dot-named views of a model's parameters ("blocks.0.attn.c_q" -> array)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class ParamMismatchError(ValueError):
    """A set of named arrays does not fit a model (missing, unexpected or misshaped)."""


def path_name(path) -> str:
    """Dot-joined parameter name of a pytree key path ("blocks.0.attn.c_q").

    Attribute keys (a Variable's `.value` leaf) are not part of the name, so the name is the same
    whether a Variable or its array is the leaf.
    """
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif not isinstance(key, jax.tree_util.GetAttrKey):
            raise ValueError(f"cannot name a parameter path containing {key!r}")
    return ".".join(parts)


def named_params(model: nnx.Module) -> dict[str, jax.Array]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(str(p) for p in path): var.get_value() for path, var in flat}


def check_params(expected: dict[str, tuple[int, ...]], arrays: dict[str, object], source: str) -> None:
    """Raise ParamMismatchError unless `arrays` has exactly the expected names and shapes."""
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong = sorted(n for n in set(expected) & set(arrays) if tuple(arrays[n].shape) != tuple(expected[n]))
    problems = []
    if missing:
        problems.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for n in wrong[:5]:
        problems.append(f"{n}: shape {tuple(arrays[n].shape)}, model expects {tuple(expected[n])}")
    if problems:
        raise ParamMismatchError(f"{source} does not match the model config: " + "; ".join(problems))


def assign_params(model: nnx.Module, arrays: dict[str, object], source: str = "weights") -> None:
    """Load named arrays into the model (as fp32 master weights), after checking names and shapes."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    check_params({".".join(str(p) for p in path): var.get_value().shape for path, var in flat}, arrays, source)
    for path, var in flat:
        var.set_value(jnp.asarray(arrays[".".join(str(p) for p in path)], dtype=var.get_value().dtype))
    nnx.update(model, nnx.from_flat_state(flat))
