"""Conversation data sets, scored by their loss on assistant tokens (eval_type "loss").

SmolTalk (HuggingFaceTB/smol-smoltalk: 460K train / 24K test general chats) and CustomJSON
(a jsonl file of conversations, e.g. identity conversations). A CustomJSON line is a JSON
array of messages, as nanochat's, or an object {"messages": [...]}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from flaxchat.evals.download import write_atomic
from flaxchat.evals.errors import TaskDataError, TaskError
from flaxchat.evals.tasks.common import Task, check_messages
from flaxchat.evals.tasks.data import HubSplit, json_lines, load_rows, require_columns, shuffled

SMOLTALK_SPLITS = ("train", "test")


class ConversationTask(Task):
    eval_type = "loss"

    def evaluate(self, conversation: dict, completion: str) -> bool:
        raise TaskError(f"{self.name} is scored by its conversation loss, not per completion")


def smoltalk_how_to_provide(split: str) -> str:
    return (
        f"SmolTalk is not available offline: on a machine with network, run once to cache HuggingFaceTB/smol-smoltalk "
        f"{split}, or pass path= a local copy with a `messages` column (parquet or jsonl; apps/eval: --data-dir DATA "
        f"with DATA/smoltalk.parquet or a DATA/smoltalk/ directory of shards)."
    )


class SmolTalk(ConversationTask):
    def __init__(self, split: str = "train", path: str | Path | None = None, **slice_args):
        super().__init__(**slice_args)
        if split not in SMOLTALK_SPLITS:
            raise TaskError(f"SmolTalk split must be one of {SMOLTALK_SPLITS}, got {split!r}")
        self.split = split
        rows, self.source = load_rows(path, HubSplit("HuggingFaceTB/smol-smoltalk", "default", split),
                                      smoltalk_how_to_provide(split))
        require_columns(rows, ("messages",), f"SmolTalk {self.source}")
        self.rows = shuffled(rows)

    def num_examples(self) -> int:
        return len(self.rows)

    def get_example(self, index: int) -> dict:
        return {"messages": check_messages(self.rows[index]["messages"], f"SmolTalk {self.source} row {index}")}


class CustomJSON(ConversationTask):
    """Conversations from a jsonl file, in file order."""

    def __init__(self, path: str | Path, **slice_args):
        super().__init__(**slice_args)
        path = Path(path).expanduser()
        if not path.exists():
            raise TaskDataError(f"{path} does not exist: give CustomJSON a jsonl file of conversations")
        self.source = f"local {path}"
        self.conversations = [check_messages(_messages(row), f"{path}:{number}") for number, row in json_lines(path)]
        if not self.conversations:
            raise TaskDataError(f"{path} holds no conversations")

    def num_examples(self) -> int:
        return len(self.conversations)

    def get_example(self, index: int) -> dict:
        return {"messages": self.conversations[index]}


def _messages(row):
    return row.get("messages") if isinstance(row, dict) else row


def write_conversations(path: str | Path, conversations: Iterable[dict]) -> Path:
    """Write conversations as CustomJSON jsonl (one JSON array of messages per line), atomically."""
    lines = [json.dumps(c["messages"], ensure_ascii=False) for c in conversations]
    write_atomic(Path(path), "".join(line + "\n" for line in lines))
    return Path(path)
