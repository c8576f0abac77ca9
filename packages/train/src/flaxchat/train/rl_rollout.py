"""GRPO rollouts as nanochat's chat_rl: samples with tool use, rewards, advantages, loss weights, pass@k.

Per question, `num_samples` completions come from the Engine (with the calculator / python tool),
in calls of `device_batch_size` rows. The reward is the task's (1.0 for a right final answer),
the advantage is reward - mean over the question's samples (no division by the std). The loss
is the policy gradient on the sampled tokens only: the prompt, forced tool outputs and padding
have weight 0. Each pass of `device_batch_size` rows is normalized by its own number of sampled
tokens, and by the passes and questions of the step (nanochat's token-level normalization).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from flaxchat.infer.engine import Engine
from flaxchat.train.step import IGNORE_INDEX

LENGTH_BUCKET = 64  # batches are padded to a multiple of this many positions: few shapes, few compilations
EVAL_SEED = 42  # nanochat evaluates with the Engine's default seed


class RLTask(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def reward(self, conversation: dict[str, Any], completion: str) -> float: ...

    def evaluate(self, conversation: dict[str, Any], completion: str) -> bool: ...


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    num_samples: int = 16  # completions per question, a multiple of device_batch_size
    device_batch_size: int = 8  # rows per Engine call and per training pass; k of pass@k
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 50


@dataclasses.dataclass(frozen=True)
class Rollout:
    sequences: list[list[int]]  # prompt + generated tokens, without the final <|assistant_end|>
    masks: list[list[int]]  # 1 = sampled, 0 = prompt or forced tool output
    rewards: np.ndarray  # float32 (num_samples,)

    @property
    def advantages(self) -> np.ndarray:
        return self.rewards - self.rewards.mean()


def rollout_seed(step: int, example: int, sampling_step: int) -> int:
    """nanochat's seed per Engine call (hash of an int tuple is the same in every Python process)."""
    return hash((step, example, sampling_step)) & 0x7FFFFFFF


def completions(engine: Engine, conversation: dict, seeds: list[int], cfg: SamplingConfig) -> tuple[list, list, int]:
    """(sequences, masks, prompt length): device_batch_size completions per seed, one Engine call each."""
    tokens = engine.tokenizer.render_for_completion(conversation)
    sequences, masks = [], []
    for seed in seeds:
        rows, row_masks = engine.generate_batch(tokens, num_samples=cfg.device_batch_size, max_tokens=cfg.max_new_tokens,
                                                temperature=cfg.temperature, top_k=cfg.top_k, seed=seed)
        sequences += rows
        masks += row_masks
    return sequences, masks, len(tokens)


def sample_rollout(engine: Engine, task: RLTask, example: int, step: int, cfg: SamplingConfig) -> Rollout:
    conversation = task[example]
    seeds = [rollout_seed(step, example, s) for s in range(cfg.num_samples // cfg.device_batch_size)]
    sequences, masks, prompt_len = completions(engine, conversation, seeds, cfg)
    decode = engine.tokenizer.decode
    rewards = np.asarray([task.reward(conversation, decode(seq[prompt_len:])) for seq in sequences], np.float32)
    return Rollout(sequences, masks, rewards)


@dataclasses.dataclass(frozen=True)
class PolicyGradientBatch:
    inputs: np.ndarray  # int32 (passes, rows, T)
    targets: np.ndarray  # int32 (passes, rows, T), -1 where the target was not sampled
    weights: np.ndarray  # float32 (passes, rows, T): advantage / normalizer on sampled targets, else 0


def bucketed(length: int, bucket: int = LENGTH_BUCKET) -> int:
    return -(-length // bucket) * bucket


def policy_gradient_batch(rollouts: list[Rollout], rows: int, pad_id: int,
                          bucket: int = LENGTH_BUCKET) -> PolicyGradientBatch:
    """All rollouts of one step as passes of `rows` sequences, padded (with pad_id, mask 0) to one bucketed length.

    sum(weights * cross_entropy) is nanochat's loss: per pass, -sum(logp * advantage) over the
    sampled targets / (sampled targets in the pass * passes per question * questions).
    """
    num_samples = len(rollouts[0].sequences)
    if num_samples % rows or any(len(r.sequences) != num_samples for r in rollouts):
        raise ValueError(f"every rollout needs the same number of samples, a multiple of {rows} rows per pass")
    passes_per_example = num_samples // rows
    width = bucketed(max(len(s) for r in rollouts for s in r.sequences) - 1, bucket) + 1
    tokens = np.full((len(rollouts) * num_samples, width), pad_id, np.int32)
    mask = np.zeros_like(tokens, dtype=np.int8)
    advantages = np.concatenate([r.advantages for r in rollouts]).astype(np.float32)
    for i, (seq, m) in enumerate((s, m) for r in rollouts for s, m in zip(r.sequences, r.masks)):
        tokens[i, : len(seq)] = seq
        mask[i, : len(m)] = m
    sampled = mask[:, 1:] == 1
    targets = np.where(sampled, tokens[:, 1:], IGNORE_INDEX).astype(np.int32)
    shape = (-1, rows, width - 1)
    sampled = sampled.reshape(shape)
    per_pass = np.maximum(sampled.sum(axis=(1, 2), keepdims=True), 1)
    weights = sampled * advantages.reshape(-1, rows, 1) / (per_pass * passes_per_example * len(rollouts))
    return PolicyGradientBatch(tokens[:, :-1].reshape(shape), targets.reshape(shape), weights.astype(np.float32))


def pass_at_k(engine: Engine, task: RLTask, num_examples: int, cfg: SamplingConfig) -> np.ndarray:
    """pass@1..k, k = device_batch_size, on the first num_examples of task: the fraction of questions
    with a right answer among their first j samples (nanochat: one Engine call per question, seed 42)."""
    n = min(num_examples, len(task))
    hits = np.zeros(cfg.device_batch_size)
    for index in range(n):
        conversation = task[index]
        sequences, _, prompt_len = completions(engine, conversation, [EVAL_SEED], cfg)
        right = [bool(task.evaluate(conversation, engine.tokenizer.decode(s[prompt_len:]))) for s in sequences]
        hits += np.cumsum(right) > 0
    return hits / max(n, 1)
