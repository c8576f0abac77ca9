"""Chat with an exported model on LiteRT; needs ai-edge-litert, tiktoken and numpy, no jax.

    python -m flaxchat.export.run d12.litert "What is the capital of France?"
    python -m flaxchat.export.run d12-int8.litert "Tell me a story" -t 0.8 -k 50 --max-tokens 200
    python -m flaxchat.export.run d12.litert "Once upon a time" --completion -t 0

The prompt is one user turn and the reply streams as the assistant's (as the chat CLI), or with
--completion the text is continued as is. Python tool calls are shown as generated, not run.
"""

from __future__ import annotations

import argparse
import sys
import time

from flaxchat.export.errors import GenerationError, PackageError
from flaxchat.export.generate import Sampling, TextStream, chat_prompt, generate, stop_ids
from flaxchat.export.runtime import LiteRTModel


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flaxchat.export.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="an exported model directory (NAME.litert) or its model.tflite")
    p.add_argument("prompt", help="the user's message (or, with --completion, the text to continue)")
    p.add_argument("-t", "--temperature", type=float, default=0.6, help="0 = greedy (default 0.6)")
    p.add_argument("-k", "--top-k", type=int, default=50,
                   help="sample among the k likeliest tokens, 0 = off (default 50)")
    p.add_argument("--max-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--seed", type=int, default=42, help="sampling seed (default 42)")
    p.add_argument("--completion", action="store_true", help="continue the prompt as plain text instead of chatting")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for LiteRT (default: all cores)")
    args = p.parse_args(argv)
    if args.max_tokens < 1 or (args.threads is not None and args.threads < 1):
        p.error("--max-tokens and --threads must be >= 1")
    return args


def reply(model: LiteRTModel, args: argparse.Namespace, sampling: Sampling) -> None:
    """Stream the reply to stdout, then the speed to stderr."""
    tokenizer = model.tokenizer
    if args.completion:
        prompt = tokenizer.encode(args.prompt, prepend=tokenizer.bos_id)
    else:
        prompt = chat_prompt(tokenizer, args.prompt)
    room = model.max_len - len(prompt) + 1
    if room < 1:
        raise GenerationError(f"the prompt ({len(prompt)} tokens) does not fit the exported KV cache "
                              f"({model.max_len} positions): shorten it or re-export with a larger --max-len")
    stream = TextStream(tokenizer)
    start, count = time.perf_counter(), 0
    for token in generate(model, prompt, min(args.max_tokens, room), sampling, stop_ids(tokenizer)):
        sys.stdout.write(stream.feed(token))
        sys.stdout.flush()
        count += 1
    sys.stdout.write(stream.flush() + "\n")
    seconds = time.perf_counter() - start
    print(f"{count} tokens in {seconds:.2f} s ({count / max(seconds, 1e-9):.1f} tok/s, prompt {len(prompt)} tokens)",
          file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        sampling = Sampling(args.temperature, args.top_k, args.seed)
        start = time.perf_counter()
        with LiteRTModel.load(args.model, args.threads) as model:
            c = model.config
            print(f"loaded {model.model_path.parent.name}: d{c.n_layer} {c.quantization}, cache {c.max_len}, "
                  f"vocab {c.vocab_size} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
            reply(model, args, sampling)
    except (PackageError, GenerationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
