"""Speed measurements shared by `apps/bench`: the machine's own peaks and model forward/backward."""

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


def measure_matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
    """FLOP/s of a jitted n x n matmul on the default device: the MFU denominator."""
    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, b))
    return 2 * n**3 / min(timed(lambda: matmul(a, b), repeats))


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
