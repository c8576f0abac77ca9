"""The CORE metric (DCLM paper), computed exactly as nanochat's core_eval.py and base_eval.py.

Per task: the jsonl rows are shuffled with random.Random(1337) and cut to `max_per_task`;
item idx gets few-shot examples random.Random(1234 + idx).sample(other indices, num_fewshot)
from that shuffled, cut list. Prompts (BOS prepended):
  multiple_choice {query, choices, gold}:  one prompt per choice, scored on the tokens after
                                           the choices' common token prefix;
  schema {context_options, continuation, gold}: one prompt per context, scored on the common
                                           token suffix;
  language_modeling {context, continuation}: scored on the continuation's tokens, which must
                                           follow the (stripped) prompt without it exactly.
MC/schema: the option with the lowest mean loss (the first on ties) must be gold. LM: greedy
predictions must reproduce the continuation. Prompts are never truncated, as nanochat's GPT.
centered = (accuracy - 0.01 * baseline%) / (1 - 0.01 * baseline%); CORE = mean over tasks.
Items are batched by length for speed; each item's scores do not depend on its batch.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from flaxchat.evals.bundle import CORE_LABELS, Bundle, CoreTask
from flaxchat.evals.errors import CoreError
from flaxchat.evals.forward import Scorer, bucket, right_padded

SHUFFLE_SEED = 1337
FEWSHOT_SEED = 1234


# Few-shot sampling ----------------------------------------------------------------------------
class _AllBut(Sequence):
    """range(n) without `skip`, lazily: random.sample picks positions, so sampling from this equals
    sampling from the materialized list [i for i in range(n) if i != skip] (nanochat's), at O(k) cost."""

    def __init__(self, n: int, skip: int):
        self.n, self.skip = n, skip

    def __len__(self) -> int:
        return self.n - 1

    def __getitem__(self, j: int) -> int:
        if not 0 <= j < self.n - 1:
            raise IndexError(j)
        return j + (j >= self.skip)


def fewshot_indices(n: int, idx: int, k: int) -> list[int]:
    if k == 0:
        return []
    return random.Random(FEWSHOT_SEED + idx).sample(_AllBut(n, idx), k)


# Prompt rendering (the Jinja templates of nanochat, as plain string formatting) -----------------
def render_prompts(item: dict, task_type: str, delimiter: str, fewshot: Sequence[dict] = ()) -> list[str]:
    if task_type == "multiple_choice":
        shots = "".join(f"{ex['query']}{delimiter}{ex['choices'][ex['gold']]}\n\n" for ex in fewshot)
        return [f"{shots}{item['query']}{delimiter}{choice}" for choice in item["choices"]]
    if task_type == "schema":
        shots = "".join(f"{ex['context_options'][ex['gold']]}{delimiter}{ex['continuation']}\n\n" for ex in fewshot)
        return [f"{shots}{option}{delimiter}{item['continuation']}" for option in item["context_options"]]
    if task_type == "language_modeling":
        shots = "".join(f"{str(ex['context']).strip()}{delimiter}{ex['continuation']}\n\n" for ex in fewshot)
        prompt = f"{shots}{str(item['context']).strip()}{delimiter}"
        # Stripped so a trailing-space delimiter does not become its own token before the continuation.
        return [prompt.strip(), f"{prompt}{item['continuation']}"]
    raise CoreError(f"unsupported task type {task_type!r}")


def common_length(sequences: Sequence[Sequence[int]], direction: str) -> int:
    """Length of the common prefix ('left') or suffix ('right') of token sequences."""
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        index = i if direction == "left" else -1 - i
        if any(s[index] != sequences[0][index] for s in sequences):
            return i
    return shortest


@dataclasses.dataclass(frozen=True)
class PreparedItem:
    """Token rows of one item and the [start, end) token range scored in each row."""

    tokens: list[list[int]]
    starts: list[int]
    ends: list[int]
    gold: int | None  # None for language modeling


def prepare_item(tokenizer, item: dict, task: CoreTask, fewshot: Sequence[dict] = ()) -> PreparedItem:
    prompts = render_prompts(item, task.task_type, task.continuation_delimiter, fewshot)
    tokens = tokenizer.encode(prompts, prepend=tokenizer.bos_id)
    if task.task_type == "multiple_choice":
        start = common_length(tokens, "left")
        return PreparedItem(tokens, [start] * len(tokens), [len(t) for t in tokens], item["gold"])
    if task.task_type == "schema":
        suffix = common_length(tokens, "right")
        return PreparedItem(tokens, [len(t) - suffix for t in tokens], [len(t) for t in tokens], item["gold"])
    without, with_continuation = tokens
    start, end = len(without), len(with_continuation)
    if not start < end or with_continuation[:start] != without:
        raise CoreError(f"{task.label}: the prompt without the continuation does not tokenize to a strict prefix of the "
                        f"prompt with it (context ...{str(item.get('context'))[-80:]!r}, continuation "
                        f"{str(item.get('continuation'))[:40]!r}); this tokenizer cannot score the item")
    return PreparedItem([with_continuation], [start], [end], None)


# Scoring ---------------------------------------------------------------------------------------
def _judge(item: PreparedItem, losses: np.ndarray, predictions: np.ndarray, targets: np.ndarray) -> bool:
    spans = [end - start for start, end in zip(item.starts, item.ends)]
    if item.gold is None:
        return bool(np.all(predictions[0, : spans[0]] == targets[0, : spans[0]]))
    # Python floats and list.index(min(...)): nanochat's tie-break (the first option) and its NaN behaviour.
    means = [float(np.mean(losses[r, :n], dtype=np.float64)) if n else float("nan") for r, n in enumerate(spans)]
    return means.index(min(means)) == item.gold


def score_items(scorer: Scorer, items: Sequence[PreparedItem], pad: int, batch_rows: int = 32,
                on_batch: Callable[[int], None] | None = None) -> list[bool]:
    """Correctness of each item; items are grouped by length into batches of about `batch_rows` rows."""
    order = sorted(range(len(items)), key=lambda i: max(map(len, items[i].tokens)))
    correct = [False] * len(items)
    batch: list[int] = []

    def flush():
        rows = [(i, r) for i in batch for r in range(len(items[i].tokens))]
        spans = [items[i].ends[r] - items[i].starts[r] for i, r in rows]
        # Few shapes, few compilations: rows padded to batch_rows, spans and lengths bucketed.
        width = bucket(max(spans), minimum=16)
        positions = np.zeros((bucket(len(rows), minimum=batch_rows), width), np.int32)
        targets = np.zeros_like(positions)
        for k, (i, r) in enumerate(rows):
            start, end = items[i].starts[r], items[i].ends[r]
            positions[k, : end - start] = np.arange(start - 1, end - 1)  # position p predicts token p + 1
            targets[k, : end - start] = items[i].tokens[r][start:end]
        sequences = [items[i].tokens[r] for i, r in rows]
        ids = right_padded(sequences, positions.shape[0], bucket(max(map(len, sequences)), minimum=64), pad)
        losses, predictions = scorer.token_scores(ids, positions, targets)
        k = 0
        for i in batch:
            n = len(items[i].tokens)
            correct[i] = _judge(items[i], losses[k:k + n], predictions[k:k + n], targets[k:k + n])
            k += n
        if on_batch:
            on_batch(len(batch))
        batch.clear()

    for i in order:
        if batch and sum(len(items[j].tokens) for j in batch) + len(items[i].tokens) > batch_rows:
            flush()
        batch.append(i)
    if batch:
        flush()
    return correct


def load_task_data(bundle: Bundle, task: CoreTask, max_per_task: int = -1) -> list[dict[str, Any]]:
    """The task's items in nanochat's order: shuffled with Random(1337), then the first max_per_task (-1 = all)."""
    path = bundle.data_path(task)
    data = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except ValueError as e:
                    raise CoreError(f"{path}:{number}: not valid JSON ({e})") from None
    random.Random(SHUFFLE_SEED).shuffle(data)
    return data[:max_per_task] if max_per_task > 0 else data


def evaluate_task(model, tokenizer, data: Sequence[dict], task: CoreTask, batch_rows: int = 32,
                  progress: bool = False) -> float:
    """Accuracy on one task's (shuffled, cut) items."""
    if task.num_fewshot > len(data) - 1:
        raise CoreError(f"{task.label} is {task.num_fewshot}-shot and few-shot examples come from the evaluated items, "
                        f"but only {len(data)} are evaluated: evaluate at least {task.num_fewshot + 1} items per task")
    items = []
    for idx, item in enumerate(data):
        fewshot = [data[i] for i in fewshot_indices(len(data), idx, task.num_fewshot)]
        try:
            items.append(prepare_item(tokenizer, item, task, fewshot))
        except (KeyError, IndexError, TypeError) as e:
            raise CoreError(f"{task.label} item {idx} does not fit the {task.task_type} format ({e!r}): {item!r:.200}") from None
    with tqdm(total=len(items), desc=task.label, unit="item", disable=not progress, leave=False, dynamic_ncols=True) as bar:
        correct = score_items(Scorer(model), items, tokenizer.bos_id, batch_rows, on_batch=bar.update)
    return sum(correct) / len(correct)


def centered_accuracy(accuracy: float, random_baseline_percent: float) -> float:
    baseline = 0.01 * random_baseline_percent
    return (accuracy - baseline) / (1.0 - baseline)


@dataclasses.dataclass(frozen=True)
class TaskResult:
    label: str
    accuracy: float
    centered: float
    items: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class CoreResult:
    tasks: tuple[TaskResult, ...]
    core: float  # mean centered accuracy over the bundle's tasks
    missing: tuple[str, ...]  # CORE tasks this bundle lacks (then `core` is not nanochat's CORE)


def evaluate_core(model, tokenizer, bundle: Bundle, max_per_task: int = -1, batch_rows: int = 32,
                  progress: bool = False, on_task: Callable[[TaskResult], None] | None = None) -> CoreResult:
    """CORE over every task of the bundle."""
    results = []
    for task in bundle.tasks:
        t0 = time.perf_counter()
        data = load_task_data(bundle, task, max_per_task)
        accuracy = evaluate_task(model, tokenizer, data, task, batch_rows, progress)
        result = TaskResult(task.label, accuracy, centered_accuracy(accuracy, task.random_baseline), len(data),
                            time.perf_counter() - t0)
        results.append(result)
        if on_task:
            on_task(result)
    labels = {t.label for t in bundle.tasks}
    core = sum(r.centered for r in results) / len(results)
    return CoreResult(tuple(results), core, tuple(label for label in CORE_LABELS if label not in labels))
