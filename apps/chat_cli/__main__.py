"""Chat with a model in the terminal (nanochat's chat_cli).

The reply streams token by token; python tool calls and their outputs are shown as fenced blocks
(in color on a terminal). Commands: `quit` or `exit` to leave, `clear` for a new conversation.

    uv run apps/chat_cli                                 # the newest model under <base>/models
    uv run apps/chat_cli --model d4-sft -t 0.8
    uv run apps/chat_cli -p "What is the capital of France?"
"""

from __future__ import annotations

import argparse
import sys
import time

DTYPES = ("float32", "bfloat16")
MARKERS = {  # how the boundaries of tool calls are shown
    "python_start": "\n```python\n",
    "python_end": "\n```\n",
    "output_start": "```output\n",
    "output_end": "\n```\n",
}
COLORS = {"python": "\033[36m", "output": "\033[33m", "marker": "\033[2m"}
RESET = "\033[0m"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="chat_cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint name under <base>/models, or a path (default: the newest saved model)")
    p.add_argument("-p", "--prompt", help="answer this one message and exit")
    p.add_argument("-t", "--temperature", type=float, default=0.6, help="0 = greedy (default 0.6)")
    p.add_argument("-k", "--top-k", type=int, default=50, help="sample among the k likeliest tokens, 0 = off (default 50)")
    p.add_argument("--max-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed, the same for every turn (default 42)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (default float32)")
    p.add_argument("--no-color", action="store_true", help="plain output even on a terminal")
    args = p.parse_args(argv)
    if args.temperature < 0 or args.top_k < 0 or args.max_tokens < 1:
        p.error("--temperature and --top-k must be >= 0 and --max-tokens >= 1")
    if not 0 <= args.seed < 2**32:
        p.error("--seed must be in [0, 2**32)")
    return args


def show(piece, color: bool) -> str:
    """A streamed Piece as terminal text: answer text as is, tool calls fenced (and colored)."""
    if piece.kind in MARKERS:
        marker = MARKERS[piece.kind]
        return f"{COLORS['marker']}{marker}{RESET}" if color else marker
    if color and piece.kind in COLORS:
        return f"{COLORS[piece.kind]}{piece.text}{RESET}"
    return piece.text


def stream_reply(session, message: str, color: bool) -> None:
    for piece in session.reply(message):
        sys.stdout.write(show(piece, color))
        sys.stdout.flush()
    sys.stdout.write("\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax.numpy as jnp
    from flaxchat.infer.cli import ChatError, ChatSession, ChatSettings, newest_checkpoint
    from flaxchat.infer.engine import Engine
    from flaxchat.infer.errors import GenerationError
    from flaxchat.model.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

    try:
        path = resolve_checkpoint(args.model) if args.model else newest_checkpoint()
        start = time.perf_counter()
        model, tokenizer, _ = load_checkpoint(path, dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = model.config
    print(f"loaded {path.name}: d{c.n_layer}, {c.n_embd} wide, context {c.sequence_len}, vocab {c.vocab_size} "
          f"({time.perf_counter() - start:.1f}s); the first reply compiles the model", file=sys.stderr, flush=True)
    settings = ChatSettings(temperature=args.temperature, top_k=args.top_k or None, max_tokens=args.max_tokens, seed=args.seed)
    session = ChatSession(Engine(model, tokenizer), settings)
    color = sys.stdout.isatty() and not args.no_color

    if args.prompt is not None:
        try:
            stream_reply(session, args.prompt, color)
        except (ChatError, GenerationError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    print("Chat: `quit` or `exit` to leave, `clear` for a new conversation.", flush=True)
    while True:
        try:
            message = input("\nUser: ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = message.strip().lower()
        if command in ("quit", "exit"):
            return 0
        if command == "clear":
            session.clear()
            print("[new conversation]")
            continue
        if not command:
            continue
        print("\nAssistant: ", end="", flush=True)
        try:
            stream_reply(session, message, color)
        except (ChatError, GenerationError) as e:
            print(f"\nerror: {e}")
        except KeyboardInterrupt:  # stop this reply, keep the conversation
            print("\n[interrupted]")


if __name__ == "__main__":
    sys.exit(main())
