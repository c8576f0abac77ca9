"""Base-model pretraining, nanochat's base_train on one JAX code path (1 CPU .. multi-host pod)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.evals.bpb import bpb_sums
from flaxchat.model import GPT, GPTConfig
from flaxchat.model.benchmark import measure_matmul_peak
from flaxchat.model.checkpoint import models_dir, save_checkpoint
from flaxchat.model.counting import flops_per_token, num_scaling_params, param_counts
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.paths import base_dir
from flaxchat.train import mesh as meshlib
from flaxchat.train.checkpointing import TrainCheckpointer, abstract_like
from flaxchat.train.data.pipeline import PretrainBatches
from flaxchat.train.optim import (
    OptimizerConfig,
    auto_total_batch_size,
    batch_lr_scale,
    build_optimizer,
    pretrain_schedules,
    reference_tokens,
    scaled_weight_decay,
    target_tokens,
    training_iterations,
)
from flaxchat.train.report import MetricsLog, write_report
from flaxchat.train.step import setup_training

log = logging.getLogger(__name__)


class PretrainError(ValueError):
    """A pretraining run cannot start as configured."""


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    run: str = "default"
    model: GPTConfig = dataclasses.field(default_factory=GPTConfig)
    data: str | None = None  # None: the embedded default corpus
    device_batch_size: int = 32
    total_batch_size: int = -1  # -1: nanochat's automatic choice
    num_iterations: int = -1
    target_flops: float = -1.0
    target_param_data_ratio: float = 12.0
    embedding_lr: float = 0.3
    unembedding_lr: float = 0.008
    matrix_lr: float = 0.02
    scalar_lr: float = 0.5
    weight_decay: float = 0.28
    warmup_steps: int = 40
    warmdown_ratio: float = 0.65
    final_lr_frac: float = 0.05
    eval_every: int = 250
    eval_tokens: int = 80 * 524288
    sample_every: int = 2000
    model_eval_every: int = -1  # steps between `model_eval` calls (e.g. CORE); -1: only at the last step
    save_every: int = -1  # -1: only at the end
    keep_checkpoints: int = 2
    resume: bool = False
    dtype: str = "float32"
    remat: bool = False
    dp: int | None = None
    fsdp: int = 1
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything derived from the config before training starts (nanochat's derivation chain)."""

    total_batch_size: int
    grad_accum: int
    num_iterations: int
    lr_scale: float
    weight_decay: float
    target_tokens: int
    flops_per_token: int
    eval_steps: int


def make_plan(cfg: PretrainConfig, num_devices: int) -> Plan:
    m = cfg.model
    scaling = num_scaling_params(m)
    tokens = target_tokens(scaling, cfg.target_param_data_ratio)
    reference = GPTConfig.from_depth(12, aspect_ratio=64, head_dim=m.head_dim, max_seq_len=m.sequence_len,
                                     window_pattern=m.window_pattern, vocab_size=m.vocab_size)
    d_ref = reference_tokens(num_scaling_params(reference), cfg.target_param_data_ratio)
    total = cfg.total_batch_size if cfg.total_batch_size > 0 else auto_total_batch_size(tokens, d_ref)
    per_step = cfg.device_batch_size * m.sequence_len * num_devices
    if total % per_step:
        raise PretrainError(
            f"--total-batch-size {total} is not a multiple of device batch {cfg.device_batch_size} x seq "
            f"{m.sequence_len} x {num_devices} devices = {per_step}"
        )
    iters = training_iterations(total, tokens=tokens, flops_per_token=flops_per_token(m),
                                num_iterations=cfg.num_iterations, target_flops=cfg.target_flops)
    return Plan(
        total_batch_size=total,
        grad_accum=total // per_step,
        num_iterations=iters,
        lr_scale=batch_lr_scale(total),
        weight_decay=scaled_weight_decay(cfg.weight_decay, total, tokens, d_ref),
        target_tokens=tokens,
        flops_per_token=flops_per_token(m),
        eval_steps=max(1, cfg.eval_tokens // per_step),
    )


def optimizer_config(cfg: PretrainConfig, plan: Plan) -> OptimizerConfig:
    return OptimizerConfig(embedding_lr=cfg.embedding_lr, unembedding_lr=cfg.unembedding_lr, matrix_lr=cfg.matrix_lr,
                           scalar_lr=cfg.scalar_lr, weight_decay=plan.weight_decay, batch_lr_scale=plan.lr_scale,
                           compute_dtype=cfg.dtype)


def run_dir(run: str) -> Path:
    return base_dir() / "runs" / run


def pretrain(cfg: PretrainConfig, tokenizer: Tokenizer, *, progress: Callable[[dict], None] | None = None,
             sample: Callable[[GPT, int], list[tuple[str, str]]] | None = None,
             model_eval: Callable[[GPT, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train; returns a summary.

    `progress(record)` sees every record (plan, train, val, sample, model_eval) for a progress display;
    `sample(model, step)` returns (prompt, completion) pairs at --sample-every steps;
    `model_eval(model, step)` (e.g. the CORE metric) runs every `cfg.model_eval_every` steps and at the
    last step, as nanochat's --core-metric-every; each result is a `model_eval` record, and the last
    step's scores join the summary and the report.
    """
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise PretrainError(f"tokenizer vocab {tokenizer.vocab_size} != model vocab {cfg.model.vocab_size}")
    mesh = meshlib.make_mesh(cfg.dp, cfg.fsdp)
    num_devices = mesh.devices.size
    plan = make_plan(cfg, num_devices)
    out_dir = run_dir(cfg.run)
    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
    local_rows = cfg.device_batch_size * num_devices // jax.process_count()

    # Model, sharded parameters, optimizer.
    model = GPT(cfg.model, rngs=nnx.Rngs(cfg.seed), dtype=dtype, remat=cfg.remat)
    schedules = pretrain_schedules(plan.num_iterations, cfg.warmup_steps, cfg.warmdown_ratio, cfg.final_lr_frac)
    tx = build_optimizer(nnx.state(model), cfg.model, optimizer_config(cfg, plan), schedules)
    setup = setup_training(model, tx, mesh)
    graphdef, params, opt_state, train_step = setup.graphdef, setup.params, setup.opt_state, setup.step
    eval_step = jax.jit(lambda p, x, y, tb: bpb_sums(nnx.merge(graphdef, p), x, y, tb))
    token_bytes = jnp.asarray(tokenizer.token_bytes())

    # Data: this process's rows of every micro-step.
    def batches(split: str) -> PretrainBatches:
        return PretrainBatches(tokenizer, cfg.data, split, local_rows, cfg.model.sequence_len,
                               process_index=jax.process_index(), process_count=jax.process_count())

    train_data = batches("train")
    # A train-state checkpoint holds the fp32 parameters and about two buffers per parameter.
    checkpointer = TrainCheckpointer(out_dir / "checkpoints", keep=cfg.keep_checkpoints,
                                     min_free_bytes=3 * 4 * param_counts(cfg.model)["total"])
    start, loop = 0, {"smooth_loss": 0.0, "min_val_bpb": float("inf"), "train_time_s": 0.0}
    if cfg.resume:
        latest = checkpointer.latest_step()
        if latest is None:
            raise PretrainError(f"--resume: no checkpoint under {checkpointer.directory}; start without --resume")
        params, opt_state, data_state, loop = checkpointer.restore(
            latest, abstract_like(params, setup.param_shardings), abstract_like(opt_state, setup.opt_shardings))
        train_data.set_state(data_state)
        start = latest
        log.info("resumed %s at step %d", cfg.run, start)
    metrics = MetricsLog(out_dir / "metrics.jsonl", resume_step=start if cfg.resume else None)
    if not cfg.resume:
        metrics.write(kind="config", plan=dataclasses.asdict(plan), model=cfg.model.to_dict(), devices=num_devices)

    peak = measure_matmul_peak(dtype) * num_devices
    n = plan.num_iterations
    if progress:
        progress({"kind": "plan", "num_iterations": n, "start": start})

    def evaluate(step: int) -> float:
        nats, nbytes = 0.0, 0
        with batches("val") as val:
            for _ in range(plan.eval_steps):
                x, y = next(val)
                xs, ys = (meshlib.global_batch(a, mesh) for a in (x, y))
                a, b = eval_step(params, xs, ys, token_bytes)
                nats, nbytes = nats + float(a), nbytes + int(b)
        bpb = nats / (math.log(2) * nbytes) if nbytes else float("inf")
        loop["min_val_bpb"] = min(loop["min_val_bpb"], bpb)
        record = {"kind": "val", "step": step, "bpb": bpb}
        metrics.write(**record)
        if progress:
            progress(record)
        return bpb

    val_bpb = float("nan")
    latest_scores: dict[str, Any] = {}
    for step in range(start, n + 1):
        last = step == n
        if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or last):
            val_bpb = evaluate(step)
        periodic = cfg.model_eval_every > 0 and step > 0 and step % cfg.model_eval_every == 0
        if model_eval is not None and (last or periodic):
            latest_scores = model_eval(nnx.merge(graphdef, params), step)
            record = {"kind": "model_eval", "step": step, **latest_scores}
            metrics.write(**record)
            if progress:
                progress(record)
        if sample is not None and cfg.sample_every > 0 and (last or (step > 0 and step % cfg.sample_every == 0)):
            for prompt, completion in sample(nnx.merge(graphdef, params), step):
                record = {"kind": "sample", "step": step, "prompt": prompt, "completion": completion}
                metrics.write(**record)
                if progress:
                    progress(record)
        if step > start and (last or (cfg.save_every > 0 and step % cfg.save_every == 0)):
            checkpointer.save(step, params, opt_state, train_data.get_state(), loop)
        if last:
            break
        rows = [next(train_data) for _ in range(plan.grad_accum)]
        xs = meshlib.global_batch(np.stack([r[0] for r in rows]), mesh, leading=1)
        ys = meshlib.global_batch(np.stack([r[1] for r in rows]), mesh, leading=1)
        t0 = time.perf_counter()
        params, opt_state, losses = train_step(params, opt_state, xs, ys, jnp.float32(step / n))
        loss = float(losses[-1])  # waits for the step; nanochat logs the last micro-step's loss
        dt = time.perf_counter() - t0
        if step - start > 0:  # the first step of a process includes compilation
            loop["train_time_s"] += dt
        loop["smooth_loss"] = 0.9 * loop["smooth_loss"] + 0.1 * loss
        record = {
            "kind": "train", "step": step, "loss": loss,
            "smooth_loss": loop["smooth_loss"] / (1 - 0.9 ** (step + 1)),
            "lrm": float(schedules.at(step).lr_multiplier), "dt": dt,
            "tok_per_s": plan.total_batch_size / dt,
            "mfu": 100 * plan.flops_per_token * plan.total_batch_size / dt / peak,
        }
        metrics.write(**record)
        if progress:
            progress(record)
    checkpointer.wait()
    checkpointer.close()
    train_data.close()

    model = nnx.merge(graphdef, jax.device_get(params))
    summary = {
        "run": cfg.run,
        "steps": n,
        "params": param_counts(cfg.model)["total"],
        "total_batch_size": plan.total_batch_size,
        "tokens_trained": n * plan.total_batch_size,
        "final_val_bpb": val_bpb,
        "min_val_bpb": loop["min_val_bpb"],
        "train_time_s": round(loop["train_time_s"], 1),
        "devices": num_devices,
    }
    summary |= latest_scores
    if jax.process_index() == 0:
        summary["model_dir"] = str(save_checkpoint(models_dir() / cfg.run, model, tokenizer,
                                                   {**summary, "kind": "base", "model_dtype": cfg.dtype}))
        summary["report"] = str(write_report(out_dir, f"pretraining run {cfg.run}", metrics.read(), summary))
    return summary
