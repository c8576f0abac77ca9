"""Per-row bookkeeping on the host: forced tokens, completion, and the python tool state machine.

Every generation mode feeds its sampled token columns through `Rows`, so all of them stop
the same way; only the streaming modes pass a tokenizer and so run tools.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

from flaxchat.infer.tools import SandboxError, execute_code, use_calculator
from flaxchat.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    python_start: int
    python_end: int
    output_start: int
    output_end: int
    assistant_end: int
    bos: int

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "SpecialTokens":
        get = tokenizer.encode_special
        return cls(
            python_start=get("<|python_start|>"),
            python_end=get("<|python_end|>"),
            output_start=get("<|output_start|>"),
            output_end=get("<|output_end|>"),
            assistant_end=get("<|assistant_end|>"),
            bos=tokenizer.bos_id,
        )

    @property
    def stops(self) -> tuple[int, int]:
        """Tokens that complete a row (it keeps being fed until every row completes, as nanochat)."""
        return (self.assistant_end, self.bos)


def run_python_block(code: str) -> str:
    """The tool output for a python block: the calculator's str(result), else the sandbox's stdout or error."""
    result = use_calculator(code)
    if result is not None:
        return str(result)
    try:
        run = execute_code(code)
    except SandboxError as e:  # no sandbox on this machine: the model (and user) see why
        return f"SandboxError: {e}"
    if run.success:
        return run.stdout.rstrip("\n")
    return run.error or "Execution failed"


@dataclasses.dataclass
class _Row:
    forced: deque = dataclasses.field(default_factory=deque)
    in_python: bool = False
    python_tokens: list = dataclasses.field(default_factory=list)
    completed: bool = False


class Rows:
    """The token columns of one request; `tokenizer=None` disables tools (tokens pass through unchanged)."""

    def __init__(self, special: SpecialTokens, num_rows: int, tokenizer: Tokenizer | None):
        self.special = special
        self.tokenizer = tokenizer
        self._rows = [_Row() for _ in range(num_rows)]

    @property
    def all_completed(self) -> bool:
        return all(row.completed for row in self._rows)

    @property
    def forcing(self) -> bool:
        """Some row's next token is a queued forced one (so the next column is not just the samples)."""
        return any(row.forced for row in self._rows)

    def advance(self, sampled: Sequence[int]) -> tuple[list[int], list[int]]:
        """Choose each row's next token (a queued forced token, else the sample) -> (column, mask)."""
        column, mask = [], []
        for row, token in zip(self._rows, sampled):
            forced = bool(row.forced)
            token = row.forced.popleft() if forced else int(token)
            column.append(token)
            mask.append(0 if forced else 1)
            if token in self.special.stops:
                row.completed = True
            if self.tokenizer is not None:
                self._tool_step(row, token)
        return column, mask

    def _tool_step(self, row: _Row, token: int) -> None:
        sp = self.special
        if token == sp.python_start:
            row.in_python, row.python_tokens = True, []
        elif token == sp.python_end and row.in_python:
            row.in_python = False
            if row.python_tokens:
                output = run_python_block(self.tokenizer.decode(row.python_tokens))
                row.forced.extend([sp.output_start, *self.tokenizer.encode(output), sp.output_end])
            row.python_tokens = []
        elif row.in_python:
            row.python_tokens.append(token)
