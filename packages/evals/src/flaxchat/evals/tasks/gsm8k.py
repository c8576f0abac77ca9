"""GSM8K (openai/gsm8k): grade-school math word problems; generative.

A solution marks each calculation as <<expr=result>> and ends with "#### <answer>". The
assistant message is built as nanochat does: every <<expr=result>> becomes a `python` part
(expr, split at the last "=") followed by a `python_output` part (result), so the model learns
to call the calculator; the text in between becomes `text` parts.
"""

from __future__ import annotations

import re
from pathlib import Path

from flaxchat.evals.errors import TaskError
from flaxchat.evals.tasks.common import Task, final_answers_match
from flaxchat.evals.tasks.data import HubSplit, load_rows, require_columns, shuffled

SUBSETS = ("main", "socratic")
SPLITS = ("train", "test")
_CALL = re.compile(r"(<<[^>]+>>)")


def solution_parts(solution: str) -> list[dict]:
    """A GSM8K-format solution -> assistant parts with calculator calls."""
    parts = []
    for piece in _CALL.split(solution):
        if piece.startswith("<<") and piece.endswith(">>"):
            inner = piece[2:-2]
            expr, result = inner.rsplit("=", 1) if "=" in inner else (inner, "")
            parts += [{"type": "python", "text": expr}, {"type": "python_output", "text": result}]
        else:
            parts.append({"type": "text", "text": piece})
    return parts


def word_problem(question: str, solution: str) -> dict:
    return {"messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": solution_parts(solution)},
    ]}


class WordProblemTask(Task):
    """Generative; right iff the completion's '#### n' equals the reference's."""

    eval_type = "generative"

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return final_answers_match(conversation, completion)


def how_to_provide(subset: str, split: str) -> str:
    return (
        f"GSM8K is not available offline: on a machine with network, run once to cache openai/gsm8k {subset}/{split}, "
        f"or pass path= a local copy with question/answer columns (jsonl or parquet; apps/eval: --data-dir DATA with "
        f"DATA/gsm8k.jsonl). ArithmeticWordProblems generates problems in the same format."
    )


class GSM8K(WordProblemTask):
    def __init__(self, split: str = "test", path: str | Path | None = None, subset: str = "main", **slice_args):
        super().__init__(**slice_args)
        if subset not in SUBSETS:
            raise TaskError(f"GSM8K subset must be one of {SUBSETS}, got {subset!r}")
        if split not in SPLITS:
            raise TaskError(f"GSM8K split must be one of {SPLITS}, got {split!r}")
        self.subset, self.split = subset, split
        rows, self.source = load_rows(path, HubSplit("openai/gsm8k", subset, split), how_to_provide(subset, split))
        require_columns(rows, ("question", "answer"), f"GSM8K {self.source}")
        self.rows = shuffled(rows)

    def num_examples(self) -> int:
        return len(self.rows)

    def get_example(self, index: int) -> dict:
        row = self.rows[index]
        return word_problem(row["question"], row["answer"])
