"""Reinforcement learning with GRPO as nanochat's chat_rl: on-policy REINFORCE with a group-mean baseline.

No KL penalty, no reference model, no PPO ratio or clipping (the samples come from the current
weights), advantage = reward - mean over the question's samples, token-level normalization
(`rl_rollout`). nanochat's settings: AdamW/Muon LRs 0.2 / 0.004 / 0.02 times 0.05, decaying
linearly to 0 over the run, Muon momentum 0.95, one optimizer step per 16 questions x 16
samples, pass@k on held-out questions every 60 steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxchat.infer.engine import Engine
from flaxchat.train import mesh as meshlib
from flaxchat.train.finetune import FinetuneError, load_source, output_for, save_result
from flaxchat.train.optim import OptimizerConfig, build_optimizer, rl_schedules
from flaxchat.train.report import MetricsLog, plot_series, write_report
from flaxchat.train.rl_rollout import RLTask, SamplingConfig, pass_at_k, policy_gradient_batch, sample_rollout
from flaxchat.train.step import setup_training

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RLConfig:
    model: str  # source checkpoint: a name under <base>/models, or a path
    out: str | None = None  # name or path of the result; None: <model>-rl
    num_epochs: int = 1
    num_steps: int = -1  # > 0: exactly this many steps; -1: (train questions // examples_per_step) x num_epochs
    device_batch_size: int = 8
    examples_per_step: int = 16
    num_samples: int = 16
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 50
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    matrix_lr: float = 0.02
    weight_decay: float = 0.0  # Muon groups
    init_lr_frac: float = 0.05
    eval_every: int = 60  # pass@k every N steps (and at the end); -1: only at the end
    eval_examples: int = 400
    save_every: int = 60  # checkpoint every N steps (and at the end); -1: only at the end
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("num_epochs", "device_batch_size", "examples_per_step", "num_samples", "max_new_tokens",
                     "eval_examples"):
            if getattr(self, name) <= 0:
                raise FinetuneError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_steps == 0 or self.num_steps < -1:
            raise FinetuneError(f"num_steps must be positive or -1, got {self.num_steps}")
        if self.num_samples % self.device_batch_size:
            raise FinetuneError(f"num_samples ({self.num_samples}) must be a multiple of device_batch_size "
                                f"({self.device_batch_size}): samples are drawn device_batch_size at a time")
        if self.temperature < 0 or self.top_k < 0:
            raise FinetuneError(f"temperature ({self.temperature}) and top_k ({self.top_k}) must be >= 0 "
                                "(temperature 0: greedy, top_k 0: off)")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) == 0 or getattr(self, name) < -1:
                raise FinetuneError(f"{name} must be positive or -1, got {getattr(self, name)}")

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.num_samples, self.device_batch_size, self.max_new_tokens, self.temperature, self.top_k)


def make_pg_step(graphdef, tx: optax.GradientTransformation, out_shardings=None):
    """step(params, opt_state, inputs, targets, weights) -> (params, opt_state, loss).

    One optimizer update on the gradient of sum over passes of sum(weights * cross entropy):
    the weights already hold the advantages and nanochat's normalization, so passes add up
    (no averaging). params and opt_state are donated.
    """

    def pass_loss(params, inputs, targets, weights):
        return nnx.merge(graphdef, params).weighted_loss(inputs, targets, weights)

    grad_fn = jax.value_and_grad(pass_loss)

    def step(params, opt_state, inputs, targets, weights):
        def accumulate(total, batch):
            loss, grads = grad_fn(params, *batch)
            return jax.tree.map(jnp.add, total, grads), loss

        grads, losses = jax.lax.scan(accumulate, jax.tree.map(jnp.zeros_like, params), (inputs, targets, weights))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, losses.sum()

    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)


def num_rl_steps(cfg: RLConfig, num_questions: int) -> int:
    if cfg.num_steps > 0:
        return cfg.num_steps
    steps = num_questions // cfg.examples_per_step * cfg.num_epochs
    if steps == 0:
        raise FinetuneError(f"{num_questions} training questions make no step of {cfg.examples_per_step} questions: "
                            "lower --examples-per-step or give --num-steps")
    return steps


def rl(cfg: RLConfig, train_task: RLTask, val_task: RLTask, *, data_label: str,
       progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """GRPO on cfg.model with train_task's rewards; pass@k on val_task. Returns a summary.

    `progress(record)` sees every record (plan, train, eval).
    """
    if jax.process_count() > 1:
        raise FinetuneError("RL samples with a single-host Engine: run it as one process (on that host's devices)")
    model, tokenizer, _ = load_source(cfg.model, cfg.dtype)
    output = output_for(cfg.model, cfg.out, "-rl")
    mesh = meshlib.make_mesh()
    if cfg.device_batch_size % mesh.devices.size:
        raise FinetuneError(f"device_batch_size {cfg.device_batch_size} rows do not split over {mesh.devices.size} devices")
    num_steps = num_rl_steps(cfg, len(train_task))
    log.info("RL of %s on %s: %d steps of %d questions x %d samples", cfg.model, data_label, num_steps,
             cfg.examples_per_step, cfg.num_samples)

    opt = OptimizerConfig(embedding_lr=cfg.embedding_lr, unembedding_lr=cfg.unembedding_lr, matrix_lr=cfg.matrix_lr,
                          weight_decay=cfg.weight_decay, compute_dtype=cfg.dtype)
    schedules = rl_schedules(num_steps, cfg.init_lr_frac)
    tx = build_optimizer(nnx.state(model), model.config, opt, schedules)
    setup = setup_training(model, tx, mesh)
    params, opt_state = setup.params, setup.opt_state
    pg_step = make_pg_step(setup.graphdef, tx, (setup.param_shardings, setup.opt_shardings, meshlib.replicated(mesh)))
    # The Engine reads the model's weights per request: keep the model on the current parameters.
    nnx.update(model, params)
    engine = Engine(model, tokenizer)
    pad_id = tokenizer.encode_special("<|assistant_end|>")  # only padding: never a target
    lr_multiplier = jax.jit(lambda step: schedules.at(step).lr_multiplier)

    metrics = MetricsLog(output.run_dir / "metrics.jsonl")
    metrics.write(kind="config", source=cfg.model, data=data_label, config=dataclasses.asdict(cfg), num_steps=num_steps,
                  train_questions=len(train_task), val_questions=len(val_task), devices=mesh.devices.size)
    if progress:
        progress({"kind": "plan", "num_iterations": num_steps, "start": 0})

    def emit(record: dict) -> None:
        metrics.write(**record)
        if progress:
            progress(record)

    def evaluate(step: int) -> list[float]:
        passk = pass_at_k(engine, val_task, cfg.eval_examples, cfg.sampling).tolist()
        emit({"kind": "eval", "step": step, "pass_at_k": passk})
        return passk

    def save(step: int, extra: dict) -> str | None:
        metadata = {"kind": "rl", "source": cfg.model, "data": data_label, "step": step, "model_dtype": cfg.dtype, **extra}
        path = save_result(output, model, tokenizer, metadata)
        return None if path is None else str(path)

    examples = itertools.cycle(range(len(train_task)))
    smooth, rewards_seen = 0.0, []
    for step in range(num_steps):
        if cfg.eval_every > 0 and step % cfg.eval_every == 0:
            evaluate(step)
        t0 = time.perf_counter()
        rollouts = [sample_rollout(engine, train_task, next(examples), step, cfg.sampling)
                    for _ in range(cfg.examples_per_step)]
        t1 = time.perf_counter()
        batch = policy_gradient_batch(rollouts, cfg.device_batch_size, pad_id)
        arrays = (meshlib.global_batch(a, mesh, leading=1) for a in (batch.inputs, batch.targets, batch.weights))
        params, opt_state, loss = pg_step(params, opt_state, *arrays)
        nnx.update(model, params)
        loss = float(loss)
        t2 = time.perf_counter()
        reward = float(np.mean([r.rewards.mean() for r in rollouts]))
        rewards_seen.append(reward)
        smooth = 0.9 * smooth + 0.1 * loss
        emit({
            "kind": "train", "step": step, "reward": reward, "loss": loss, "smooth_loss": smooth / (1 - 0.9 ** (step + 1)),
            "lrm": float(lr_multiplier(step)),
            "sequence_length": float(np.mean([len(s) for r in rollouts for s in r.sequences])),
            "sample_s": t1 - t0, "train_s": t2 - t1,
        })
        if step < num_steps - 1 and cfg.save_every > 0 and step > 0 and step % cfg.save_every == 0:
            save(step, {"reward": reward})
    final = evaluate(num_steps)

    k = cfg.device_batch_size
    summary = {
        "run": output.name,
        "source": cfg.model,
        "data": data_label,
        "steps": num_steps,
        "first_reward": rewards_seen[0],
        "last_reward": rewards_seen[-1],
        "final_pass@1": final[0],
        f"final_pass@{k}": final[-1],
    }
    path = save(num_steps - 1, {"pass_at_k": final, "last_reward": rewards_seen[-1]})
    if path is not None:
        summary["model_dir"] = path
        summary["report"] = str(write_rl_report(output.run_dir, f"RL run {output.name} (from {cfg.model})",
                                                metrics.read(), summary))
    return summary


def write_rl_report(run_dir, title: str, records: list[dict], summary: dict[str, Any]):
    """The training report plus the reward curve and pass@k over steps."""
    path = write_report(run_dir, title, records, summary)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    steps = [r["step"] for r in train]
    rewards = [r["reward"] for r in train]
    smooth, ema = [], 0.0
    for i, reward in enumerate(rewards):
        ema = 0.9 * ema + 0.1 * reward
        smooth.append(ema / (1 - 0.9 ** (i + 1)))
    plot_series(run_dir / "reward.png", "mean reward per step", [("reward", steps, rewards), ("smoothed", steps, smooth)], "reward")
    k = len(evals[0]["pass_at_k"])
    eval_steps = [r["step"] for r in evals]
    plot_series(run_dir / "pass_at_k.png", "pass@k on held-out questions",
         [(f"pass@{j}", eval_steps, [r["pass_at_k"][j - 1] for r in evals]) for j in sorted({1, k})], "fraction right")
    lines = ["", "## Rewards and pass@k", "", "| step | " + " | ".join(f"pass@{j}" for j in range(1, k + 1)) + " |",
             "|---" * (k + 1) + "|"]
    lines += [f"| {r['step']} | " + " | ".join(f"{v:.3f}" for v in r["pass_at_k"]) + " |" for r in evals]
    lines += ["", "![reward.png](reward.png)", "![pass_at_k.png](pass_at_k.png)", ""]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(path.read_text() + "\n".join(lines))
    os.replace(tmp, path)
    return path
