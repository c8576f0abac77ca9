"""ARC-Easy / ARC-Challenge (allenai/ai2_arc): grade-school science multiple choice; categorical.

Rows come in either format:
  hub  {"question": str, "choices": {"text": [...], "label": [...]}, "answerKey"}   (ai2_arc parquet)
  AI2  {"question": {"stem": str, "choices": [{"text", "label"}, ...]}, "answerKey"} (the original jsonl)
Labels are the row's own ("A".."E" or "1".."4").
"""

from __future__ import annotations

from pathlib import Path

from flaxchat.evals.errors import TaskDataError, TaskError
from flaxchat.evals.tasks.common import MultipleChoiceTask, render_mc
from flaxchat.evals.tasks.data import HubSplit, load_rows, require_columns, shuffled

SUBSETS = ("ARC-Easy", "ARC-Challenge")
SPLITS = ("train", "validation", "test")


def how_to_provide(subset: str, split: str) -> str:
    return (
        f"ARC is not available offline: on a machine with network, run once to cache allenai/ai2_arc "
        f"{subset}/{split}, or pass path= a local copy (the hub's parquet, or AI2's {subset}-{split.capitalize()}.jsonl; "
        f"apps/eval: --data-dir DATA with DATA/{subset.lower()}.jsonl or .parquet)."
    )


def _question_and_choices(row: dict) -> tuple[str, list[str], list[str]]:
    question = row["question"]
    if isinstance(question, dict):  # AI2's original layout
        choices = question["choices"]
        return question["stem"], [c["text"] for c in choices], [c["label"] for c in choices]
    return question, list(row["choices"]["text"]), list(row["choices"]["label"])


class ARC(MultipleChoiceTask):
    def __init__(self, subset: str = "ARC-Easy", split: str = "test", path: str | Path | None = None, **slice_args):
        super().__init__(**slice_args)
        if subset not in SUBSETS:
            raise TaskError(f"ARC subset must be one of {SUBSETS}, got {subset!r}")
        if split not in SPLITS:
            raise TaskError(f"ARC split must be one of {SPLITS}, got {split!r}")
        self.subset, self.split = subset, split
        rows, self.source = load_rows(path, HubSplit("allenai/ai2_arc", subset, split), how_to_provide(subset, split))
        require_columns(rows, ("question", "answerKey"), f"{subset} {self.source}")
        self.rows = shuffled(rows)

    @property
    def name(self) -> str:
        return self.subset

    def num_examples(self) -> int:
        return len(self.rows)

    def get_example(self, index: int) -> dict:
        row = self.rows[index]
        try:
            question, choices, letters = _question_and_choices(row)
        except (KeyError, TypeError) as e:
            raise TaskDataError(f"{self.subset} row {index} ({self.source}) lacks {e}: {row!r:.200}") from None
        answer = row["answerKey"]
        if answer not in letters:
            raise TaskDataError(f"{self.subset} row {index} ({self.source}): answerKey {answer!r} is not one of {letters}")
        return {
            "messages": [
                {"role": "user", "content": render_mc(question, letters, choices)},
                {"role": "assistant", "content": answer},
            ],
            "letters": letters,
        }
