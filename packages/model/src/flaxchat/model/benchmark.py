"""Speed measurements shared by `apps/bench`: the machine's own peaks (matmul FLOP/s, memory bandwidth) and model forward/backward."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.model.config import GPTConfig
from flaxchat.model.counting import flops_per_token, param_counts
from flaxchat.model.gpt import GPT


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall time of `repeats` calls, each waited on (jax dispatch is asynchronous)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}:{getattr(device, 'device_kind', 'unknown')} x{jax.device_count()}"


def measure_matmul_peak(dtype=jnp.float32, n: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of a jitted n x n matmul in `dtype` on the default device: the MFU denominator.

    Measure in the compute dtype (bf16 runs at several times the fp32 rate on accelerators).
    n defaults to 2048 on CPU and 8192 on accelerators, where smaller products stay below peak.
    """
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, b))
    return 2 * n**3 / min(timed(lambda: matmul(a, b), repeats))


def measure_memory_bandwidth(size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Bytes/s of a jitted in-place read+write of a donated fp32 buffer: the MBU denominator.

    Donation lets XLA update the buffer in place; a fresh output each call would measure page
    faults instead (about 10x slower on CPU).
    """
    if size_bytes < 4:
        raise ValueError(f"size_bytes must be at least 4, got {size_bytes}")
    bump = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    buffer = [jnp.zeros((size_bytes // 4,), jnp.float32)]

    def step():
        buffer[0] = bump(buffer[0])
        return buffer[0]

    jax.block_until_ready(step())  # compile and touch every page once
    return 2 * buffer[0].nbytes / min(timed(step, repeats))


def bench_forward(
    config: GPTConfig, batch_size: int, *, dtype=jnp.float32, remat: bool = False, steps: int = 3, seed: int = 0
) -> dict:
    """Tokens/s of the jitted loss (forward) and of value_and_grad (forward + backward)."""
    model = GPT(config, rngs=nnx.Rngs(seed), dtype=dtype, remat=remat)
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(seed)
    idx = jnp.asarray(rng.integers(0, config.vocab_size, (batch_size, config.sequence_len)), jnp.int32)
    targets = jnp.roll(idx, -1, axis=1)

    def loss(params, idx, targets):
        return nnx.merge(graphdef, params)(idx, targets)

    tokens = batch_size * config.sequence_len
    train_flops = flops_per_token(config) * tokens
    result = {
        "config": config.to_dict(),
        "dtype": jnp.dtype(dtype).name,
        "remat": remat,
        "batch_size": batch_size,
        "tokens_per_step": tokens,
        "num_params": param_counts(config)["total"],
        "flops_per_token": flops_per_token(config),
    }
    for name, fn, flops in (
        ("forward", jax.jit(loss), train_flops / 3),
        ("forward_backward", jax.jit(jax.value_and_grad(loss)), train_flops),
    ):
        start = time.perf_counter()
        compiled = fn.lower(params, idx, targets).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(params, idx, targets))  # warm-up
        step_s = float(np.median(timed(lambda: compiled(params, idx, targets), steps)))
        result[name] = {
            "compile_s": round(compile_s, 3),
            "step_s": round(step_s, 4),
            "tokens_per_s": round(tokens / step_s, 1),
            "flops_per_s": flops / step_s,
        }
    return result
