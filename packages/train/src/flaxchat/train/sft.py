"""Supervised fine-tuning on conversations, nanochat's chat_sft on the pretraining step and optimizer.

A pretrained checkpoint (by name or path) is trained on a conversation task with only the
assistant's tokens supervised (`sft_data`), with nanochat's SFT optimizer settings: the
pretraining LRs without batch scaling, times init_lr_frac 0.8, Muon weight decay 0, LR by
progress through the data (constant, then down to 0 over the second half), Muon momentum
0.85 -> 0.95 over 300 steps, and by default the base run's optimizer moments as a warm start.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.evals.bpb import bpb_sums
from flaxchat.model import GPTConfig
from flaxchat.model.benchmark import measure_matmul_peak
from flaxchat.model.counting import flops_per_token
from flaxchat.train import mesh as meshlib
from flaxchat.train.checkpointing import TrainCheckpointer, abstract_like
from flaxchat.train.finetune import FinetuneError, load_source, output_for, save_result
from flaxchat.train.optim import OptimizerConfig, build_optimizer, restart_schedules, sft_schedules
from flaxchat.train.pretrain import PretrainConfig, run_dir
from flaxchat.train.report import MetricsLog, write_report
from flaxchat.train.sft_data import ConversationBatches, ConversationTask
from flaxchat.train.step import TrainSetup, setup_training

log = logging.getLogger(__name__)

MAX_DEVICE_BATCH_SIZE = 32  # nanochat's fallback device batch size


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """None = inherit from the source checkpoint's metadata (as nanochat's chat_sft does)."""

    model: str  # source checkpoint: a name under <base>/models, or a path
    out: str | None = None  # name or path of the result; None: <model>-sft
    num_iterations: int = -1  # > 0: exactly this many steps; -1: num_epochs passes over the data
    num_epochs: int = 1
    max_seq_len: int | None = None
    device_batch_size: int | None = None
    total_batch_size: int | None = None
    embedding_lr: float | None = None
    unembedding_lr: float | None = None
    matrix_lr: float | None = None
    init_lr_frac: float = 0.8
    warmup_ratio: float = 0.0
    warmdown_ratio: float = 0.5
    final_lr_frac: float = 0.0
    eval_every: int = 200
    eval_tokens: int = 40 * 524288
    load_optimizer: bool = True  # warm-start from the base run's optimizer state when it exists
    dtype: str = "float32"

    def __post_init__(self):
        if self.num_iterations == 0 or self.num_iterations < -1:
            raise FinetuneError(f"num_iterations must be positive or -1, got {self.num_iterations}")
        if self.num_epochs <= 0:
            raise FinetuneError(f"num_epochs must be positive, got {self.num_epochs}")
        for name in ("max_seq_len", "device_batch_size", "total_batch_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FinetuneError(f"{name} must be positive, got {value}")
        if self.eval_tokens <= 0:
            raise FinetuneError(f"eval_tokens must be positive, got {self.eval_tokens}")


@dataclasses.dataclass(frozen=True)
class SFTPlan:
    """The settings after inheritance from the checkpoint, and what follows from them."""

    max_seq_len: int
    device_batch_size: int
    total_batch_size: int
    grad_accum: int
    embedding_lr: float
    unembedding_lr: float
    matrix_lr: float
    eval_steps: int
    inherited: tuple[str, ...]  # the settings taken from the checkpoint or its defaults


def make_plan(cfg: SFTConfig, model_config: GPTConfig, meta: dict[str, Any], num_devices: int) -> SFTPlan:
    inherited = []

    def pick(name: str, fallback):
        value = getattr(cfg, name)
        if value is not None:
            return value
        inherited.append(name)
        return meta.get(name, fallback)

    seq = pick("max_seq_len", model_config.sequence_len)
    total = pick("total_batch_size", None)
    if cfg.device_batch_size is None and "device_batch_size" not in meta:
        # Pretraining records only its total batch: as many rows as one micro-step of it holds.
        per_row = seq * num_devices
        fallback_rows = max(1, min(MAX_DEVICE_BATCH_SIZE, (total or per_row * MAX_DEVICE_BATCH_SIZE) // per_row))
    else:
        fallback_rows = MAX_DEVICE_BATCH_SIZE
    rows = pick("device_batch_size", fallback_rows)
    per_step = rows * seq * num_devices
    total = total or per_step
    if total % per_step:
        raise FinetuneError(
            f"total batch size {total} is not a multiple of device batch {rows} x seq {seq} x {num_devices} "
            f"devices = {per_step}: set --total-batch-size or --device-batch-size"
        )
    defaults = PretrainConfig()  # flaxchat checkpoints do not record their pretraining LRs
    return SFTPlan(
        max_seq_len=seq,
        device_batch_size=rows,
        total_batch_size=total,
        grad_accum=total // per_step,
        embedding_lr=pick("embedding_lr", defaults.embedding_lr),
        unembedding_lr=pick("unembedding_lr", defaults.unembedding_lr),
        matrix_lr=pick("matrix_lr", defaults.matrix_lr),
        eval_steps=max(1, cfg.eval_tokens // per_step),
        inherited=tuple(inherited),
    )


def base_optimizer_state(source: str, expected_step: int | None, setup: TrainSetup):
    """The base run's final optimizer state with its schedules restarted, or None when it has none."""
    directory = run_dir(source) / "checkpoints"
    if not directory.is_dir():
        return None
    checkpointer = TrainCheckpointer(directory, async_save=False)
    try:
        step = checkpointer.latest_step()
        if step is None or (expected_step is not None and step != expected_step):
            log.warning("the train state under %s is at step %s, the model at %s: not using it",
                        directory, step, expected_step)
            return None
        _, opt_state, _, _ = checkpointer.restore(step, abstract_like(setup.params, setup.param_shardings),
                                                  abstract_like(setup.opt_state, setup.opt_shardings))
    finally:
        checkpointer.close()
    return restart_schedules(opt_state)


def sft(cfg: SFTConfig, train_task: ConversationTask, val_task: ConversationTask, *, data_label: str,
        progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Fine-tune cfg.model on train_task; returns a summary (with model_dir and report paths).

    `data_label` names the data in logs, metadata and the report (e.g. whether it is the embedded
    default mixture). `progress(record)` sees every record (plan, train, val).
    """
    model, tokenizer, meta = load_source(cfg.model, cfg.dtype)
    output = output_for(cfg.model, cfg.out, "-sft")
    mesh = meshlib.make_mesh()
    num_devices = mesh.devices.size
    plan = make_plan(cfg, model.config, meta, num_devices)
    log.info("SFT of %s on %s: %s", cfg.model, data_label, plan)

    opt = OptimizerConfig(embedding_lr=plan.embedding_lr, unembedding_lr=plan.unembedding_lr, matrix_lr=plan.matrix_lr,
                          weight_decay=0.0, compute_dtype=cfg.dtype)
    schedules = sft_schedules(cfg.init_lr_frac, cfg.warmup_ratio, cfg.warmdown_ratio, cfg.final_lr_frac)
    tx = build_optimizer(nnx.state(model), model.config, opt, schedules)
    setup = setup_training(model, tx, mesh)
    graphdef, params, opt_state, train_step = setup.graphdef, setup.params, setup.opt_state, setup.step
    warm = base_optimizer_state(cfg.model, meta.get("steps"), setup) if cfg.load_optimizer else None
    if warm is not None:
        opt_state = jax.device_put(warm, setup.opt_shardings)
    elif cfg.load_optimizer:
        log.warning("no optimizer state of %s's pretraining run found: starting with a fresh optimizer", cfg.model)
    eval_step = jax.jit(lambda p, x, y, tb: bpb_sums(nnx.merge(graphdef, p), x, y, tb))
    lr_multiplier = jax.jit(lambda step, done: schedules.at(step, done).lr_multiplier)
    token_bytes = jnp.asarray(tokenizer.token_bytes())

    local_rows = plan.device_batch_size * num_devices // jax.process_count()

    def batches(task) -> ConversationBatches:
        return ConversationBatches(task, tokenizer, rows=local_rows, seq_len=plan.max_seq_len,
                                   process_index=jax.process_index(), process_count=jax.process_count())

    metrics = MetricsLog(output.run_dir / "metrics.jsonl")
    metrics.write(kind="config", source=cfg.model, data=data_label, plan=dataclasses.asdict(plan),
                  config=dataclasses.asdict(cfg), warm_optimizer=warm is not None,
                  train_conversations=len(train_task), val_conversations=len(val_task), devices=num_devices)
    if progress:
        progress({"kind": "plan", "num_iterations": cfg.num_iterations if cfg.num_iterations > 0 else None, "start": 0})

    def emit(record: dict) -> None:
        metrics.write(**record)
        if progress:
            progress(record)

    min_val_bpb = float("inf")

    def evaluate(step: int) -> float:
        nonlocal min_val_bpb
        nats, nbytes = 0.0, 0
        val = batches(val_task)  # a fresh pass each time: the same batches at every evaluation
        for _ in range(plan.eval_steps):
            x, y = (meshlib.global_batch(a, mesh) for a in next(val))
            a, b = eval_step(params, x, y, token_bytes)
            nats, nbytes = nats + float(a), nbytes + int(b)
        bpb = nats / (math.log(2) * nbytes) if nbytes else float("inf")
        min_val_bpb = min(min_val_bpb, bpb)
        emit({"kind": "val", "step": step, "bpb": bpb})
        return bpb

    peak = measure_matmul_peak(model.dtype) * num_devices
    fpt = flops_per_token(model.config)
    train = batches(train_task)
    batch = next(train)  # nanochat prefetches: the batch that ends the data is never trained on
    step, done, smooth, train_time, val_bpb = 0, 0.0, 0.0, 0.0, float("nan")
    while True:
        if cfg.num_iterations > 0:
            last = step == cfg.num_iterations
        else:
            last = train.progress(cfg.num_epochs) >= 1.0
        if last or (cfg.eval_every > 0 and step % cfg.eval_every == 0):
            val_bpb = evaluate(step)
        if last:
            break
        micro = [batch] + [next(train) for _ in range(plan.grad_accum - 1)]
        batch = next(train)
        # LR follows progress including the prefetched batch (nanochat), never going back.
        if cfg.num_iterations > 0:
            done = (step + 1) / cfg.num_iterations
        else:
            done = max(done, min(train.progress(cfg.num_epochs), 1.0))
        xs = meshlib.global_batch(np.stack([m[0] for m in micro]), mesh, leading=1)
        ys = meshlib.global_batch(np.stack([m[1] for m in micro]), mesh, leading=1)
        t0 = time.perf_counter()
        params, opt_state, losses = train_step(params, opt_state, xs, ys, jnp.float32(done))
        loss = float(losses[-1])  # nanochat logs the last micro-step's loss
        dt = time.perf_counter() - t0
        if step > 0:  # the first step includes compilation
            train_time += dt
        smooth = 0.9 * smooth + 0.1 * loss
        emit({
            "kind": "train", "step": step, "loss": loss, "smooth_loss": smooth / (1 - 0.9 ** (step + 1)),
            "lrm": float(lr_multiplier(step, done)), "progress": done, "epoch": train.epoch, "dt": dt,
            "tok_per_s": plan.total_batch_size / dt, "mfu": 100 * fpt * plan.total_batch_size / dt / peak,
        })
        step += 1

    model = nnx.merge(graphdef, jax.device_get(params))
    summary = {
        "run": output.name,
        "source": cfg.model,
        "data": data_label,
        "steps": step,
        "epochs": round(train.progress(), 3),
        "total_batch_size": plan.total_batch_size,
        "final_val_bpb": val_bpb,
        "min_val_bpb": min_val_bpb,
        "train_time_s": round(train_time, 1),
        "warm_optimizer": warm is not None,
    }
    metadata = {**summary, "kind": "sft", "model_dtype": cfg.dtype, "max_seq_len": plan.max_seq_len,
                "device_batch_size": plan.device_batch_size, "embedding_lr": plan.embedding_lr,
                "unembedding_lr": plan.unembedding_lr, "matrix_lr": plan.matrix_lr}
    path = save_result(output, model, tokenizer, metadata)
    if path is not None:
        summary["model_dir"] = str(path)
        summary["report"] = str(write_report(output.run_dir, f"SFT run {output.name} (from {cfg.model})",
                                             metrics.read(), summary))
    return summary
