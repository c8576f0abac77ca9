"""Schedules and scaling rules against nanochat's formulas and worked reference numbers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxchat.model import GPTConfig
from flaxchat.model.counting import flops_per_token, num_scaling_params
from flaxchat.train.optim import (
    ScalingError,
    ScheduleError,
    auto_total_batch_size,
    batch_lr_scale,
    pretrain_schedules,
    reference_tokens,
    rl_schedules,
    scaled_weight_decay,
    sft_schedules,
    target_tokens,
    training_iterations,
)


def evaluate(schedules, steps, progress=None):
    """(lr multiplier, momentum, weight decay multiplier) arrays, evaluated jitted like inside the optimizer."""
    steps = jnp.asarray(steps, jnp.int32)
    if progress is None:
        values = jax.jit(jax.vmap(lambda s: schedules.at(s)))(steps)
    else:
        values = jax.jit(jax.vmap(schedules.at))(steps, jnp.asarray(progress, jnp.float32))
    return [np.asarray(v, np.float64) for v in values]


def base_lrm(it, n, warmup=40, ratio=0.65, final=0.05):
    warmdown = round(ratio * n)
    if it < warmup:
        return (it + 1) / warmup
    if it <= n - warmdown:
        return 1.0
    p = (n - it) / warmdown
    return p + (1 - p) * final


def base_momentum(it, n, ratio=0.65):
    warmdown = round(ratio * n)
    start = n - warmdown
    if it < 400:
        return (1 - it / 400) * 0.85 + it / 400 * 0.97
    if it >= start:
        p = (it - start) / warmdown
        return 0.97 * (1 - p) + 0.90 * p
    return 0.97


@pytest.mark.parametrize("n", [5000, 500])  # at 500 the warmdown (from 175) starts inside the momentum warmup
def test_pretrain_schedules_match_formulas(n):
    steps = sorted(
        {0, 1, 20, 39, 40, 41, 174, 175, 176, 300, 399, 400, 401, 1749, 1750, 1751, 3000, n - 2, n - 1} & set(range(n))
    )
    lrm, momentum, wdm = evaluate(pretrain_schedules(n), steps)
    np.testing.assert_allclose(lrm, [base_lrm(s, n) for s in steps], rtol=1e-6)
    np.testing.assert_allclose(momentum, [base_momentum(s, n) for s in steps], rtol=1e-6)
    np.testing.assert_allclose(wdm, [0.5 * (1 + math.cos(math.pi * s / n)) for s in steps], rtol=1e-6)


def test_pretrain_schedule_landmarks():
    lrm, momentum, wdm = evaluate(pretrain_schedules(5000), [0, 39, 1750, 4999])
    np.testing.assert_allclose(lrm, [1 / 40, 1.0, 1.0, 0.05 + 0.95 / 3250], rtol=1e-6)
    np.testing.assert_allclose(momentum[:2], [0.85, 0.85 + 0.12 * 39 / 400], rtol=1e-6)
    np.testing.assert_allclose(momentum[2:], [0.97, 0.97 - 0.07 * 3249 / 3250], rtol=1e-6)
    assert wdm[0] == 1.0
    assert wdm[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4999 / 5000)), rel=1e-6)  # ~1e-7


def test_warmdown_length_rounds_half_to_even():
    # round(0.25 * 10) = 2 (Python), not 3: step 8 is still at full LR.
    lrm, _, _ = evaluate(pretrain_schedules(10, warmup_steps=0, warmdown_ratio=0.25), [7, 8, 9])
    np.testing.assert_allclose(lrm, [1.0, 1.0, 0.5 + 0.5 * 0.05], rtol=1e-6)


def test_sft_schedules():
    progress = [0.0, 0.3, 0.5, 0.75, 1.0]
    steps = [0, 150, 300, 301, 1000]
    lrm, momentum, wdm = evaluate(sft_schedules(), steps, progress)
    np.testing.assert_allclose(lrm, [0.8, 0.8, 0.8, 0.8 * 0.5, 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(momentum, [0.85, 0.9, 0.95, 0.95, 0.95], rtol=1e-6)
    np.testing.assert_allclose(wdm, 1.0)
    lrm, _, _ = evaluate(
        sft_schedules(init_lr_frac=1.0, warmup_ratio=0.1, warmdown_ratio=0.2, final_lr_frac=0.1),
        [0] * 4,
        [0.05, 0.5, 0.9, 1.0],
    )
    np.testing.assert_allclose(lrm, [(0.05 + 1e-8) / 0.1, 1.0, 0.5 + 0.5 * 0.1, 0.1], rtol=1e-6)


def test_sft_lr_needs_progress():
    with pytest.raises(ScheduleError, match="progress"):
        sft_schedules().at(3)


def test_rl_schedules():
    lrm, momentum, wdm = evaluate(rl_schedules(467), [0, 100, 466])
    np.testing.assert_allclose(lrm, [0.05 * (1 - s / 467) for s in (0, 100, 466)], rtol=1e-6)
    np.testing.assert_allclose(momentum, 0.95, rtol=1e-7)
    np.testing.assert_allclose(wdm, 1.0)


def test_schedule_validation():
    with pytest.raises(ScheduleError):
        pretrain_schedules(0)
    with pytest.raises(ScheduleError):
        pretrain_schedules(100, warmdown_ratio=1.5)
    with pytest.raises(ScheduleError):
        rl_schedules(0)


def plan(depth, ratio=12, head_dim=128, max_seq_len=2048, total_batch_size=-1, **kw):
    """base_train's derivation chain, section 2.1, run through the helpers."""
    config = GPTConfig.from_depth(depth, head_dim=head_dim, max_seq_len=max_seq_len, **kw)
    reference = GPTConfig.from_depth(12, head_dim=head_dim, max_seq_len=max_seq_len, **kw)
    tokens = target_tokens(num_scaling_params(config), ratio)
    d_ref = reference_tokens(num_scaling_params(reference), ratio)
    batch = auto_total_batch_size(tokens, d_ref) if total_batch_size == -1 else total_batch_size
    iters = training_iterations(batch, tokens=tokens, flops_per_token=flops_per_token(config))
    return (
        num_scaling_params(config),
        tokens,
        batch,
        batch_lr_scale(batch),
        scaled_weight_decay(0.28, batch, tokens, d_ref),
        iters,
    )


def test_d12_reference_numbers():
    _, _, batch, lr_scale, wd, iters = plan(12)
    assert (batch, iters) == (524_288, 2520)
    assert lr_scale == 1.0 and wd == pytest.approx(0.28, rel=1e-12)


def test_d20_reference_numbers():
    params, tokens, batch, lr_scale, wd, iters = plan(20)
    assert (params, tokens, batch, iters) == (435_160_240, 5_221_922_880, 1_048_576, 4980)
    assert lr_scale == pytest.approx(1.414214, abs=5e-7)
    assert wd == pytest.approx(0.100188, abs=5e-7)


def test_d24_speedrun_numbers():
    _, _, batch, _, wd, iters = plan(24, ratio=8)
    assert (batch, iters) == (1_048_576, 5568)
    assert wd == pytest.approx(0.059738, abs=5e-7)


def test_runcpu_numbers():
    params, _, batch, lr_scale, wd, _ = plan(
        6, head_dim=64, max_seq_len=512, total_batch_size=16384, window_pattern="L"
    )
    assert (params, batch) == (23_199_960, 16384)
    assert num_scaling_params(GPTConfig.from_depth(12, head_dim=64, max_seq_len=512)) == 110_101_344
    assert lr_scale == pytest.approx(0.1767767, abs=5e-8)
    assert wd == pytest.approx(0.2349029, abs=5e-8)


def test_training_iterations_rules():
    # An explicit count wins; then target FLOPs (Python round: half-to-even); then tokens // batch.
    assert training_iterations(8, tokens=100, flops_per_token=4, num_iterations=7, target_flops=1e9) == 7
    assert training_iterations(8, tokens=100, flops_per_token=4, target_flops=2.5 * 32) == 2
    assert training_iterations(8, tokens=100, flops_per_token=4, target_flops=3.5 * 32) == 4
    assert training_iterations(8, tokens=100, flops_per_token=4) == 12
    with pytest.raises(ScalingError, match="horizon"):
        training_iterations(8, tokens=0, flops_per_token=4)


def test_auto_batch_size_rounds_to_powers_of_two():
    assert auto_total_batch_size(1000, 1000.0) == 2**19
    # B_REF * r^0.383 with log2 landing just below / above 19.5.
    below, above = 2 ** (0.49 / 0.383), 2 ** (0.51 / 0.383)
    assert auto_total_batch_size(int(1e6 * below), 1e6) == 2**19
    assert auto_total_batch_size(int(1e6 * above), 1e6) == 2**20
    with pytest.raises(ScalingError):
        auto_total_batch_size(0, 1e6)
