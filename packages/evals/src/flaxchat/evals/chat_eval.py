"""Chat evaluation (nanochat's scripts/chat_eval.py): categorical, generative and loss tasks, ChatCORE.

- categorical: batches of prompts (render_for_completion, right-padded with BOS), one forward;
  at each prompt's last position (<|assistant_start|>) the logits of the problem's letters only
  are compared and the argmax letter is judged by task.evaluate.
- generative: per problem Engine.generate_batch (tools run), decode what follows the prompt,
  pass if any of num_samples completions passes task.evaluate.
- loss: mean cross entropy (nats per token) on the supervised (assistant) tokens.
`max_problems` evaluates the first N examples (tasks are already shuffled with a fixed seed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from tqdm.auto import tqdm

from flaxchat.evals.errors import TaskError
from flaxchat.evals.forward import Scorer, bucket, right_padded
from flaxchat.evals.tasks.common import Task, check_int
from flaxchat.infer.engine import Engine

# Accuracy of guessing, per chat task (apps/eval's task names): four-way choice, or open-ended.
CHAT_BASELINES = {"arc-easy": 0.25, "arc-challenge": 0.25, "mmlu": 0.25, "gsm8k": 0.0, "humaneval": 0.0}
CATEGORICAL_CHAT_TASKS = ("arc-easy", "arc-challenge", "mmlu")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Generative evaluation settings (nanochat's defaults: greedy, one sample, 512 tokens)."""

    num_samples: int = 1
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_k: int | None = 50
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class Score:
    """`value` is the accuracy (passed / total) or, for metric "loss", nats per supervised token."""

    metric: str
    value: float
    total: int
    passed: int | None = None
    tokens: int | None = None


def _count(task: Task, max_problems: int | None) -> int:
    if max_problems is None:
        return len(task)
    return min(len(task), check_int("max_problems", max_problems, 1))


def _bar(task: Task, total: int, progress: bool):
    return tqdm(total=total, desc=task.name, unit="problem", disable=not progress, leave=False, dynamic_ncols=True)


def _letter_ids(tokenizer, letters, cache: dict[str, int]) -> list[int]:
    ids = []
    for letter in letters:
        if letter not in cache:
            encoded = tokenizer.encode(letter)
            if len(encoded) != 1:
                raise TaskError(f"answer letter {letter!r} is {len(encoded)} tokens with this tokenizer; "
                                "categorical evaluation needs each letter to be a single token")
            cache[letter] = encoded[0]
        ids.append(cache[letter])
    return ids


def run_categorical_eval(task: Task, model, tokenizer, batch_size: int = 8, max_problems: int | None = None,
                         progress: bool = False) -> Score:
    check_int("batch_size", batch_size, 1)
    scorer, bos, letter_cache = Scorer(model), tokenizer.bos_id, {}
    n, passed = _count(task, max_problems), 0
    with _bar(task, n, progress) as bar:
        for first in range(0, n, batch_size):
            conversations = [task[i] for i in range(first, min(first + batch_size, n))]
            prompts = [tokenizer.render_for_completion(c) for c in conversations]
            ids = right_padded(prompts, batch_size, bucket(max(map(len, prompts))), bos)
            answer_at = np.zeros((batch_size, 1), np.int32)
            answer_at[: len(prompts), 0] = [len(p) - 1 for p in prompts]
            logits = scorer.logits_at(ids, answer_at)[:, 0]
            for row, conversation in enumerate(conversations):
                letters = conversation["letters"]
                choice = int(np.argmax(logits[row, _letter_ids(tokenizer, letters, letter_cache)]))
                passed += bool(task.evaluate(conversation, letters[choice]))
            bar.update(len(conversations))
            bar.set_postfix(accuracy=f"{passed / (first + len(conversations)):.3f}")
    return Score("accuracy", passed / n if n else float("nan"), n, passed)


def run_generative_eval(task: Task, engine: Engine, sampling: SamplingConfig = SamplingConfig(),
                        max_problems: int | None = None, progress: bool = False) -> Score:
    tokenizer = engine.tokenizer
    n, passed = _count(task, max_problems), 0
    with _bar(task, n, progress) as bar:
        for i in range(n):
            conversation = task[i]
            prompt = tokenizer.render_for_completion(conversation)
            # A prompt that leaves no room to generate within the model's positions counts as failed.
            room = min(sampling.max_new_tokens, engine.max_positions - len(prompt))
            if room > 0:
                sequences, _ = engine.generate_batch(
                    prompt, num_samples=sampling.num_samples, max_tokens=room, temperature=sampling.temperature,
                    top_k=sampling.top_k, seed=sampling.seed,
                )
                completions = [tokenizer.decode(seq[len(prompt):]) for seq in sequences]
                passed += any(task.evaluate(conversation, c) for c in completions)
            bar.update(1)
            bar.set_postfix(accuracy=f"{passed / (i + 1):.3f}")
    return Score("accuracy", passed / n if n else float("nan"), n, passed)


def run_loss_eval(task: Task, model, tokenizer, batch_size: int = 8, max_problems: int | None = None,
                  progress: bool = False) -> Score:
    """Mean loss on assistant tokens; each conversation is cut to the model's sequence_len (+1 for the targets)."""
    check_int("batch_size", batch_size, 1)
    scorer, bos = Scorer(model), tokenizer.bos_id
    n, nats, tokens = _count(task, max_problems), 0.0, 0
    with _bar(task, n, progress) as bar:
        for first in range(0, n, batch_size):
            rows = [tokenizer.render_conversation(task[i], max_tokens=model.config.sequence_len + 1)
                    for i in range(first, min(first + batch_size, n))]
            length = bucket(max(len(ids) for ids, _ in rows) - 1)
            inputs = right_padded([ids[:-1] for ids, _ in rows], batch_size, length, bos)
            targets = right_padded([[t if m else -1 for t, m in zip(ids[1:], mask[1:])] for ids, mask in rows],
                                   batch_size, length, -1)
            nats += scorer.loss_sum(inputs, targets)
            tokens += int((targets >= 0).sum())
            bar.update(len(rows))
    return Score("loss", nats / tokens if tokens else float("nan"), n, tokens=tokens)


def run_chat_eval(task: Task, model, tokenizer, engine: Engine | None = None, *, batch_size: int = 8,
                  sampling: SamplingConfig = SamplingConfig(), max_problems: int | None = None,
                  progress: bool = False) -> Score:
    """Evaluate `task` the way its eval_type says."""
    kind = task.eval_type
    if kind == "categorical":
        return run_categorical_eval(task, model, tokenizer, batch_size, max_problems, progress)
    if kind == "generative":
        return run_generative_eval(task, engine or Engine(model, tokenizer), sampling, max_problems, progress)
    if kind == "loss":
        return run_loss_eval(task, model, tokenizer, batch_size, max_problems, progress)
    raise TaskError(f"{task.name} has eval_type {kind!r}; expected categorical, generative or loss")


def centered(accuracy: float, baseline: float) -> float:
    """0 at the accuracy of guessing, 1 at perfect."""
    return (accuracy - baseline) / (1.0 - baseline)


def chatcore(accuracies: Mapping[str, float], tasks=tuple(CHAT_BASELINES)) -> float | None:
    """Mean centered accuracy over `tasks` (nanochat's ChatCORE: all five chat tasks); None unless all were run."""
    if not all(t in accuracies for t in tasks):
        return None
    return sum(centered(accuracies[t], CHAT_BASELINES[t]) for t in tasks) / len(tasks)


def chatcore_cat(accuracies: Mapping[str, float]) -> float | None:
    """ChatCORE over the three categorical tasks only (logged by nanochat's SFT)."""
    return chatcore(accuracies, CATEGORICAL_CHAT_TASKS)
