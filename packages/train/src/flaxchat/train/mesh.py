"""Device mesh and shardings: one code path from 1 CPU to a multi-host pod.

The mesh has axes ("data", "fsdp"). Batches are split over both (every device gets its own
rows). Parameters are replicated over "data" and, under FSDP, split over "fsdp" along the
dimension their logical axis rules name; XLA inserts the all-gathers and reduce-scatters.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flaxchat.model.params import path_name

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")

# Logical axes of each parameter (flaxchat names, Flax (in, out) layout).
_LOGICAL_AXES = (
    (r"wte|value_embeds\.\d+", ("vocab", "embed")),
    (r"lm_head", ("embed", "vocab")),
    (r"blocks\.\d+\.attn\.(c_q|c_k|c_v)", ("embed", "heads")),
    (r"blocks\.\d+\.attn\.c_proj", ("heads", "embed")),
    (r"blocks\.\d+\.mlp\.c_fc", ("embed", "mlp")),
    (r"blocks\.\d+\.mlp\.c_proj", ("mlp", "embed")),
)
# FSDP shards the model width: every matrix and embedding table has exactly one "embed" axis.
LOGICAL_RULES = {"embed": "fsdp"}


class MeshError(ValueError):
    """The requested mesh or sharding does not fit the devices or the model."""


def maybe_initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """Join a multi-host run when flags or the standard environment ask for it.

    Explicit flags win; otherwise JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID,
    and on TPU pods, SLURM or Open MPI jax.distributed finds everything by itself
    (FLAXCHAT_DISTRIBUTED=1 asks for that auto-detection).
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        num_processes = num_processes or int(os.environ["JAX_NUM_PROCESSES"])
        process_id = process_id if process_id is not None else int(os.environ["JAX_PROCESS_ID"])
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    elif os.environ.get("FLAXCHAT_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def make_mesh(dp: int | None = None, fsdp: int = 1, devices=None) -> Mesh:
    """A (data, fsdp) mesh over all devices; dp defaults to whatever fsdp leaves."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if fsdp <= 0 or n % fsdp:
        raise MeshError(f"--fsdp {fsdp} must divide the number of devices ({n})")
    dp = n // fsdp if dp is None else dp
    if dp <= 0 or dp * fsdp != n:
        raise MeshError(f"--dp {dp} x --fsdp {fsdp} = {dp * fsdp} devices, but there are {n}")
    return Mesh(np.array(devices).reshape(dp, fsdp), MESH_AXES)


def logical_axes(name: str, ndim: int) -> tuple[str | None, ...]:
    for pattern, axes in _LOGICAL_AXES:
        if re.fullmatch(pattern, name):
            return axes
    return (None,) * ndim  # scalars and the small gates are replicated


def param_spec(name: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    spec = []
    for axis, size in zip(logical_axes(name, len(shape)), shape):
        mesh_axis = LOGICAL_RULES.get(axis)
        if mesh_axis is not None and mesh.shape[mesh_axis] > 1:
            if size % mesh.shape[mesh_axis]:
                raise MeshError(
                    f"parameter {name} {tuple(shape)}: dimension {size} ({axis}) does not divide over "
                    f"{mesh.shape[mesh_axis]} {mesh_axis} devices; choose --fsdp to divide the model width"
                )
            spec.append(mesh_axis)
        else:
            spec.append(None)
    return P(*spec)


def param_shardings(params, mesh: Mesh):
    """A pytree of NamedShardings with the structure of `params` (an nnx.State or nested dict)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(path_name(path), x.shape, mesh)), params
    )


def state_shardings(state, params, mesh: Mesh):
    """Shardings for a state derived from `params` (optimizer moments, momentum buffers).

    A leaf whose path ends with a parameter's path and has that parameter's shape shards like it
    (so FSDP splits the optimizer state too); every other leaf (step counts, per-row statistics)
    is replicated. `state` may be abstract, e.g. jax.eval_shape(tx.init, params). Pass the result
    as out_shardings of the jitted init: left to itself, jit places a state that does not depend on
    the parameters' values on one device.
    """
    specs = {
        path_name(path): (tuple(x.shape), param_spec(path_name(path), x.shape, mesh))
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }

    def sharding(path, x):
        parts = path_name(path).split(".")
        for i in range(len(parts)):
            match = specs.get(".".join(parts[i:]))
            if match is not None and match[0] == tuple(x.shape):
                return NamedSharding(mesh, match[1])
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding, state)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: np.ndarray, mesh: Mesh, leading: int = 0) -> jax.Array:
    """Assemble this process's rows into a global array sharded over the batch axes.

    `leading` extra dimensions (e.g. micro-steps) come before the row dimension.
    """
    spec = P(*([None] * leading), BATCH_AXES)
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)
