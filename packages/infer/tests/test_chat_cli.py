"""apps/chat_cli: one-shot and interactive chat against a tiny checkpoint, tool calls shown, streaming decode."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flaxchat.infer.cli import ChatError, ChatSession, Piece, _SegmentDecoder
from flaxchat.infer.engine import Engine
from flaxchat.infer.rows import SpecialTokens
from flaxchat.model.checkpoint import save_checkpoint

APP = Path(__file__).resolve().parents[3] / "apps" / "chat_cli"
MAX_TOKENS = 5  # short replies keep every prompt below in one 16-token bucket (one compilation)
SEED = 5  # random weights whose greedy replies below are plain bytes without newlines (asserted)


def load_app():
    spec = importlib.util.spec_from_file_location("chat_cli_app", APP / "__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base(tmp_path_factory, make_model, tokenizer):
    """A base dir holding one tiny checkpoint, models/tiny."""
    base = tmp_path_factory.mktemp("base")
    save_checkpoint(base / "models" / "tiny", make_model(SEED), tokenizer)
    return base


def run_app(base: Path, *flags: str, stdin: str = "") -> str:
    """The app's stdout, exactly (bytes decoded without newline translation)."""
    env = {**os.environ, "FLAXCHAT_BASE_DIR": str(base), "JAX_PLATFORMS": "cpu", "PYTHONIOENCODING": "utf-8",
           # Both runs share one persistent compilation cache: the second compiles less.
           "JAX_COMPILATION_CACHE_DIR": str(base / "jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    result = subprocess.run([sys.executable, str(APP), "--model", "tiny", "--max-tokens", str(MAX_TOKENS), *flags],
                            input=stdin.encode(), env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    return result.stdout.decode("utf-8")


def greedy_reply(engine: Engine, tokens: list[int]) -> list[int]:
    """The Engine's greedy continuation, cut before its stop token."""
    sequences, _ = engine.generate_batch(tokens, num_samples=1, max_tokens=MAX_TOKENS, temperature=0.0)
    reply = sequences[0][len(tokens):]
    assert reply and max(reply) < 256 and ord("\n") not in reply, "pick a SEED whose replies are plain bytes"
    return reply


def turn(tokenizer, text: str) -> list[int]:
    sp = tokenizer.encode_special
    return [sp("<|user_start|>"), *tokenizer.encode(text), sp("<|user_end|>"), sp("<|assistant_start|>")]


def test_one_shot_prints_the_engines_greedy_reply(base, make_model, tokenizer):
    out = run_app(base, "-p", "hello", "--temperature", "0")
    expected = greedy_reply(Engine(make_model(SEED), tokenizer), [tokenizer.bos_id, *turn(tokenizer, "hello")])
    assert out == tokenizer.decode(expected) + "\n"


def test_interactive_keeps_the_conversation_and_clear_resets_it(base, make_model, tokenizer):
    out = run_app(base, "--temperature", "0", stdin="a\nb\n\nclear\na\nquit\nnever read\n")
    replies = re.findall(r"Assistant: (.*?)\n\nUser: ", out, re.DOTALL)
    assert len(replies) == 3 and "[new conversation]" in out

    engine = Engine(make_model(SEED), tokenizer)
    first_prompt = [tokenizer.bos_id, *turn(tokenizer, "a")]
    first = greedy_reply(engine, first_prompt)
    second_prompt = [*first_prompt, *first, tokenizer.encode_special("<|assistant_end|>"), *turn(tokenizer, "b")]
    second = greedy_reply(engine, second_prompt)
    assert second != greedy_reply(engine, [tokenizer.bos_id, *turn(tokenizer, "b")])  # the context matters
    assert replies == [tokenizer.decode(first), tokenizer.decode(second), tokenizer.decode(first)]


def test_no_checkpoint_says_how_to_train_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path))
    assert load_app().main(["-p", "hi"]) == 1
    err = capsys.readouterr().err
    assert "no model checkpoint" in err and "apps/pretrain" in err


class ReplayEngine:
    """Stands in for an Engine that streams fixed columns (the real tool mechanics: test_engine_tools.py)."""

    max_positions = 1024

    def __init__(self, tokenizer, columns):
        self.tokenizer, self.columns = tokenizer, columns
        self.special = SpecialTokens.of(tokenizer)

    def generate(self, tokens, num_samples, max_tokens, temperature, top_k, seed):
        return iter(self.columns)


def test_tool_calls_stream_as_marked_blocks(tokenizer):
    sp = tokenizer.encode_special
    call = [sp("<|python_start|>"), *tokenizer.encode("2+3"), sp("<|python_end|>")]
    forced = [sp("<|output_start|>"), *tokenizer.encode("5"), sp("<|output_end|>")]
    reply = [*tokenizer.encode("Sum: "), *call, *forced, *tokenizer.encode("ok")]
    columns = [([t], [1]) for t in reply[: -len(forced) - 2]] + [([t], [0]) for t in forced]  # tool output: forced
    columns += [([t], [1]) for t in [*tokenizer.encode("ok"), sp("<|assistant_end|>"), ord("!")]]
    session = ChatSession(ReplayEngine(tokenizer, columns))
    pieces = list(session.reply("add"))
    merged = []  # consecutive pieces of one kind joined (text streams token by token)
    for piece in pieces:
        if merged and piece.text and merged[-1].kind == piece.kind:
            merged[-1] = Piece(piece.kind, merged[-1].text + piece.text)
        else:
            merged.append(piece)
    assert merged == [Piece("text", "Sum: "), Piece("python_start"), Piece("python", "2+3"), Piece("python_end"),
                      Piece("output_start"), Piece("output", "5"), Piece("output_end"), Piece("text", "ok")]
    shown = "".join(load_app().show(piece, color=False) for piece in pieces)
    assert shown == "Sum: \n```python\n2+3\n```\n```output\n5\n```\nok"
    # The conversation keeps the reply as generated, closed once; nothing after the stop token.
    assert session.tokens == [tokenizer.bos_id, *turn(tokenizer, "add"), *reply, sp("<|assistant_end|>")]


def test_full_context_and_empty_messages_are_refused(tokenizer):
    session = ChatSession(ReplayEngine(tokenizer, []))
    with pytest.raises(ChatError, match="empty"):
        list(session.reply("   "))
    with pytest.raises(ChatError, match="clear"):
        list(session.reply("x" * 1024))
    assert session.tokens == [tokenizer.bos_id]  # a refused turn leaves the conversation as it was


def test_utf8_characters_are_never_split(tokenizer):
    decoder = _SegmentDecoder(tokenizer, "text")
    pieces = [decoder.feed(b) for b in "aé€".encode()]
    assert pieces == [Piece("text", "a"), None, Piece("text", "é"), None, None, Piece("text", "€")]
    assert decoder.flush() is None
    decoder.feed(0xE2)  # a character cut off by the end of the reply is still shown
    assert decoder.flush() == Piece("text", "\ufffd")
