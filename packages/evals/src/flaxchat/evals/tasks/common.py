"""The Task interface shared by evaluation, SFT and RL (nanochat's tasks/common.py).

A Task is a sequence of conversations, `{"messages": [{"role": ..., "content": ...}, ...]}`,
plus how to judge a completion of its last (assistant) message:

    task.eval_type                      "categorical" (pick one of conversation["letters"]),
                                        "generative" (sample, then evaluate) or
                                        "loss" (conversation data scored by its loss only)
    len(task), task[i]                  the i-th conversation of the (sliced) view
    task.evaluate(conversation, completion: str) -> bool
    task.reward(conversation, completion: str) -> float   1.0 / 0.0, for RL

Assistant content is a string or a list of parts {"type": "text" | "python" |
"python_output", "text": ...}. `start`, `stop` and `step` give a logical slice of the
examples, as nanochat's. TaskMixture interleaves several tasks by a seeded shuffle;
TaskSequence concatenates them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence

import numpy as np

from flaxchat.evals.errors import TaskDataError, TaskError

ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)")


def final_answer(text: str) -> str | None:
    """The number after '####' with commas removed (the GSM8K normalization), or None."""
    match = ANSWER_RE.search(text)
    return match.group(1).strip().replace(",", "") if match else None


def final_answers_match(conversation: dict, completion: str) -> bool:
    """GSM8K-style judging: the completion's '#### n' equals the reference answer's."""
    reference = final_answer(last_assistant_text(conversation))
    return reference is not None and final_answer(completion) == reference


def render_mc(question: str, letters: Sequence[str], choices: Sequence[str]) -> str:
    """nanochat's multiple-choice prompt. The letter follows its choice with no space ("- Paris=A"):
    small models bind better that way, and "A" must be the same token the assistant answers with."""
    query = f"Multiple Choice question: {question}\n"
    query += "".join(f"- {choice}={letter}\n" for letter, choice in zip(letters, choices))
    return query + "\nRespond only with the letter of the correct answer."


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = None) -> int:
    """`value` if it is an int (not a bool) of at least `minimum`, else a TaskError."""
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise TaskError(f"{name} must be an integer{bound}, got {value!r}")
    return value


class Task:
    """A logical view [start:stop:step] over a data set of conversations."""

    def __init__(self, start: int = 0, stop: int | None = None, step: int = 1):
        self.start = check_int("start", start, 0)
        self.stop = None if stop is None else check_int("stop", stop, start)
        self.step = check_int("step", step, 1)

    # What a concrete task defines --------------------------------------------------------
    @property
    def eval_type(self) -> str:
        raise TaskError(f"{type(self).__name__} has no eval_type")

    def num_examples(self) -> int:
        raise NotImplementedError

    def get_example(self, index: int) -> dict:
        raise NotImplementedError

    def evaluate(self, conversation: dict, completion: str) -> bool:
        raise TaskError(f"{type(self).__name__} defines no evaluation of completions")

    # Shared behaviour ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def reward(self, conversation: dict, completion: str) -> float:
        return 1.0 if self.evaluate(conversation, completion) else 0.0

    def __len__(self) -> int:
        total = self.num_examples()
        stop = total if self.stop is None else self.stop
        if stop > total:
            raise TaskError(f"{self.name}: stop={stop} is past its {total} examples")
        return max(0, -(-(stop - self.start) // self.step))

    def __getitem__(self, index: int) -> dict:
        if not _is_int(index):
            raise TaskError(f"{self.name}: index must be an int, got {type(index).__name__}")
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} examples")
        return self.get_example(self.start + int(index) * self.step)

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))


class MultipleChoiceTask(Task):
    """Categorical: the completion is one of conversation["letters"]; right iff it is the assistant's letter."""

    eval_type = "categorical"

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return completion.strip() == conversation["messages"][-1]["content"]


def _no_evaluate(tasks: Sequence[Task], kind: str) -> str:
    names = ", ".join(t.name for t in tasks)
    return f"a {kind} ({names}) has no evaluation of its own: evaluate each task separately"


class TaskMixture(Task):
    """All examples of `tasks` in one seeded shuffle (random.Random(seed).shuffle, nanochat's 42).

    Pass a task several times to oversample it.
    """

    def __init__(self, tasks: Sequence[Task], seed: int = 42, **slice_args):
        super().__init__(**slice_args)
        if not tasks:
            raise TaskError("TaskMixture needs at least one task")
        self.tasks = list(tasks)
        self.lengths = [len(t) for t in self.tasks]
        self.index_map = [(t, i) for t, n in enumerate(self.lengths) for i in range(n)]
        random.Random(seed).shuffle(self.index_map)

    def num_examples(self) -> int:
        return len(self.index_map)

    def get_example(self, index: int) -> dict:
        task, local = self.index_map[index]
        return self.tasks[task][local]

    def evaluate(self, conversation, completion):
        raise TaskError(_no_evaluate(self.tasks, "TaskMixture"))


class TaskSequence(Task):
    """The examples of `tasks` one task after another (a curriculum)."""

    def __init__(self, tasks: Sequence[Task], **slice_args):
        super().__init__(**slice_args)
        if not tasks:
            raise TaskError("TaskSequence needs at least one task")
        self.tasks = list(tasks)
        self.lengths = [len(t) for t in self.tasks]

    def num_examples(self) -> int:
        return sum(self.lengths)

    def get_example(self, index: int) -> dict:
        for task, length in zip(self.tasks, self.lengths):
            if index < length:
                return task[index]
            index -= length
        raise IndexError(index)

    def evaluate(self, conversation, completion):
        raise TaskError(_no_evaluate(self.tasks, "TaskSequence"))


def last_assistant_text(conversation: dict) -> str:
    """The text of the final assistant message (the last part's text when it is a list of parts)."""
    message = conversation["messages"][-1]
    if message.get("role") != "assistant":
        raise TaskError("the last message of the conversation must be the assistant's")
    content = message["content"]
    return content if isinstance(content, str) else content[-1]["text"]


def check_messages(messages, where: str) -> list[dict]:
    """A chat of string messages: an optional system message, then user/assistant alternating, at
    least one exchange. Returns it; a TaskDataError says what is wrong and where."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TaskDataError(f"{where}: messages must be a list of {{'role', 'content'}} objects")
    offset = 1 if messages and messages[0].get("role") == "system" else 0
    if len(messages) - offset < 2:
        raise TaskDataError(f"{where}: a conversation needs at least a user and an assistant message")
    for i, message in enumerate(messages):
        expected = "system" if i < offset else ("user", "assistant")[(i - offset) % 2]
        if message.get("role") != expected:
            raise TaskDataError(f"{where}: message {i} is from {message.get('role')!r}, expected {expected!r} "
                                "(an optional system message, then user and assistant alternating)")
        if not isinstance(message.get("content"), str):
            raise TaskDataError(f"{where}: message {i} content must be a string")
    return messages
