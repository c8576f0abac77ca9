"""The chat CLI's conversation (nanochat's chat_cli): a token list, replies streamed through Engine.generate.

The conversation is kept as tokens, as nanochat does: <|bos|>, then per turn <|user_start|> text
<|user_end|> <|assistant_start|> and the reply's tokens exactly as generated (tool calls and their
forced outputs included), closed by <|assistant_end|>. A reply streams as Pieces: text decoded
incrementally (never cutting a UTF-8 character in half), with the python blocks and their outputs
marked so a front end can show them apart from the answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from flaxchat.infer.engine import Engine
from flaxchat.model.checkpoint import CheckpointError, models_dir

TEXT, PYTHON, OUTPUT = "text", "python", "output"  # what a Piece's text is
# Boundary events (Pieces with no text): a python block or a tool output begins or ends.
BOUNDARIES = {
    "<|python_start|>": ("python_start", PYTHON),
    "<|python_end|>": ("python_end", TEXT),
    "<|output_start|>": ("output_start", OUTPUT),
    "<|output_end|>": ("output_end", TEXT),
}


class ChatError(ValueError):
    """A chat turn cannot run (empty message, full context); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class ChatSettings:
    """nanochat's chat_cli defaults: temperature 0.6, top-k 50, 256 tokens per reply, seed 42 every turn."""

    temperature: float = 0.6
    top_k: int | None = 50
    max_tokens: int = 256
    seed: int = 42


@dataclasses.dataclass(frozen=True)
class Piece:
    """Streamed output: `kind` is text / python / output (with text), or a boundary event (no text)."""

    kind: str
    text: str = ""


class _SegmentDecoder:
    """Incremental decoding of one segment (text, a python block or a tool output)."""

    def __init__(self, tokenizer, kind: str):
        self.tokenizer, self.kind = tokenizer, kind
        self.tokens: list[int] = []
        self.emitted = ""

    def feed(self, token: int) -> Piece | None:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens)
        if text.endswith("\ufffd"):  # maybe half a UTF-8 character: wait for the rest
            return None
        return self._emit(text)

    def flush(self) -> Piece | None:
        return self._emit(self.tokenizer.decode(self.tokens)) if self.tokens else None

    def _emit(self, text: str) -> Piece | None:
        new, self.emitted = text[len(self.emitted):], text
        return Piece(self.kind, new) if new else None


class ChatSession:
    """A multi-turn conversation with one Engine; `reply` streams the assistant's answer."""

    def __init__(self, engine: Engine, settings: ChatSettings = ChatSettings()):
        self.engine = engine
        self.settings = settings
        tok = engine.tokenizer
        names = ("<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>")
        self._special = {name: tok.encode_special(name) for name in names}
        self._boundaries = {tok.encode_special(name): event for name, event in BOUNDARIES.items()}
        self._stops = set(engine.special.stops)
        self.tokens: list[int] = []
        self.clear()

    def clear(self) -> None:
        """Start a new conversation."""
        self.tokens = [self.engine.tokenizer.bos_id]

    def reply(self, message: str) -> Iterator[Piece]:
        """Add the user's message, stream the reply, and keep both in the conversation."""
        if not message.strip():
            raise ChatError("the message is empty")
        sp = self._special
        prompt = [*self.tokens, sp["<|user_start|>"], *self.engine.tokenizer.encode(message), sp["<|user_end|>"],
                  sp["<|assistant_start|>"]]
        room = self.engine.max_positions - len(prompt)
        if room < 1:
            raise ChatError(f"the conversation fills the model's {self.engine.max_positions} positions: "
                            "type `clear` to start a new one")
        s = self.settings
        stream = self.engine.generate(prompt, num_samples=1, max_tokens=min(s.max_tokens, room),
                                      temperature=s.temperature, top_k=s.top_k, seed=s.seed)
        response: list[int] = []
        decoder = _SegmentDecoder(self.engine.tokenizer, TEXT)
        try:
            for column, _ in stream:
                token = column[0]
                if token in self._stops:
                    break
                response.append(token)
                if token in self._boundaries:
                    event, kind = self._boundaries[token]
                    if (piece := decoder.flush()) is not None:
                        yield piece
                    yield Piece(event)
                    decoder = _SegmentDecoder(self.engine.tokenizer, kind)
                elif (piece := decoder.feed(token)) is not None:
                    yield piece
            if (piece := decoder.flush()) is not None:
                yield piece
        finally:
            # Whatever was generated stays in the conversation, also when the consumer stops early.
            self.tokens = [*prompt, *response, sp["<|assistant_end|>"]]


def newest_checkpoint() -> Path:
    """The most recently saved model under <base>/models."""
    found = sorted((p for p in models_dir().glob("*") if (p / "meta.json").is_file()), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(f"no model checkpoint under {models_dir()}: train one with `uv run apps/pretrain` "
                              "(then `uv run apps/sft` to make it a chat model), or pass --model NAME|PATH")
    return found[-1]

