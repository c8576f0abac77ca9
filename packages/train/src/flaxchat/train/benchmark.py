"""Training-step speed: tokens/s and MFU of the real jitted step (model + Muon/AdamW update)."""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.model.benchmark import timed
from flaxchat.model.counting import flops_per_token, param_counts
from flaxchat.train import mesh as meshlib
from flaxchat.train.optim import OptimizerConfig, build_optimizer, pretrain_schedules
from flaxchat.train.step import setup_training


def peak_memory_bytes() -> int:
    """Peak device memory where the backend reports it, else this process's peak RSS."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench_train(config: GPTConfig, device_batch_size: int, grad_accum: int = 1, *, dtype=jnp.float32,
                remat: bool = False, steps: int = 3, dp: int | None = None, fsdp: int = 1, seed: int = 0) -> dict:
    mesh = meshlib.make_mesh(dp, fsdp)
    devices = mesh.devices.size
    model = GPT(config, rngs=nnx.Rngs(seed), dtype=dtype, remat=remat)
    tx = build_optimizer(nnx.state(model), config, OptimizerConfig(compute_dtype=jnp.dtype(dtype).name),
                         pretrain_schedules(1000))
    setup = setup_training(model, tx, mesh)
    rows = device_batch_size * devices
    rng = np.random.default_rng(seed)
    data = rng.integers(0, config.vocab_size, (grad_accum, rows, config.sequence_len + 1)).astype(np.int32)
    xs = meshlib.global_batch(data[:, :, :-1], mesh, leading=1)
    ys = meshlib.global_batch(data[:, :, 1:], mesh, leading=1)
    state = {"params": setup.params, "opt_state": setup.opt_state}
    progress = jnp.float32(0.0)

    start = time.perf_counter()
    compiled = setup.step.lower(state["params"], state["opt_state"], xs, ys, progress).compile()
    compile_s = time.perf_counter() - start

    def one_step():
        state["params"], state["opt_state"], losses = compiled(state["params"], state["opt_state"], xs, ys, progress)
        return losses
    jax.block_until_ready(one_step())  # warm-up
    step_s = float(np.median(timed(one_step, steps)))
    tokens = grad_accum * rows * config.sequence_len
    return {
        "config": config.to_dict(),
        "dtype": jnp.dtype(dtype).name,
        "remat": remat,
        "devices": devices,
        "device_batch_size": device_batch_size,
        "grad_accum": grad_accum,
        "tokens_per_step": tokens,
        "num_params": param_counts(config)["total"],
        "flops_per_token": flops_per_token(config),
        "compile_s": round(compile_s, 2),
        "step_s": round(step_s, 3),
        "tokens_per_s": round(tokens / step_s, 1),
        "flops_per_s": flops_per_token(config) * tokens / step_s,
        "peak_memory_bytes": peak_memory_bytes(),
    }
