"""Train flaxchat's BPE tokenizer (nanochat's scripts/tok_train.py, plus tok_eval.py's compression table).

    uv run apps/tok_train                      # embedded default corpus, vocab 2048
    uv run apps/tok_train --vocab-size 4096 --data 'shards/*.parquet'
"""

import argparse
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator

from flaxchat.tokenizer import MIN_VOCAB_SIZE, Tokenizer, TokenizerTrainingError, find_stock_file, tokenizer_dir
from flaxchat.train.data.errors import DataSourceError
from flaxchat.train.data.sources import iter_documents
from sample_texts import SAMPLE_TEXTS

# nanochat's post-training sanity sample: ASCII, digits, contractions, symbols, CJK, emoji.
ROUND_TRIP_TEXT = """Hello world! This is a test.
Numbers: 123, 4567, 89
Contractions: I'm, you're, it's
Special chars: @#$%^&*()
Unicode: 你好世界 🌍"""
VAL_DOCS = 1024  # documents in the held-out slice (one nanochat row group)
BASELINES = [("GPT-2", "gpt2"), ("GPT-4", "cl100k_base")]
REAL_DATA_VOCAB = 32768  # nanochat's
DEFAULT_CORPUS_VOCAB = 2048


def positive_int(value: str) -> int:
    n = int(value)  # accepts 2_000_000 too
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def tokenizer_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use letters, digits, '.', '_' and '-' (it names a directory)")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tok_train", description="Train the BPE tokenizer (rustbpe) and save it under the flaxchat base dir.")
    p.add_argument("--vocab-size", type=positive_int, default=None, help=f"tokens including the 9 special tokens (default: {REAL_DATA_VOCAB} with --data, {DEFAULT_CORPUS_VOCAB} on the embedded corpus, whose small vocabulary supports about 3,900)")
    p.add_argument("--max-chars", type=positive_int, default=2_000_000_000, help="stop reading after this many characters (default: 2B)")
    p.add_argument("--doc-cap", type=positive_int, default=10_000, help="truncate each document to this many characters (default: 10000)")
    p.add_argument("--data", metavar="PATH|GLOB", default=None, help="training text: .parquet/.txt/.jsonl file, directory or glob, or climbmix[:N] / tinystories; default: the embedded corpus")
    p.add_argument("--name", type=tokenizer_name, default="default", help="save into <base dir>/tokenizers/NAME (default: default)")
    args = p.parse_args(argv)
    if args.vocab_size is None:
        args.vocab_size = REAL_DATA_VOCAB if args.data else DEFAULT_CORPUS_VOCAB
    return args


def capped_documents(docs: Iterable[str], max_chars: int, doc_cap: int, every_s: float = 5.0) -> Iterator[str]:
    """Each doc cut to doc_cap chars; stop once the running count exceeds max_chars (that doc included)."""
    n_chars = n_docs = 0
    t0 = last = time.monotonic()
    for doc in docs:
        doc = doc[:doc_cap]
        n_chars += len(doc)
        n_docs += 1
        yield doc
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            print(f"  read {n_chars:,} chars, {n_docs:,} docs ({n_chars / (last - t0) / 1e6:.1f} M chars/s)", flush=True)
        if n_chars > max_chars:
            break
    print(f"  read {n_chars:,} chars, {n_docs:,} docs in total", flush=True)


def suggested_vocab_size(max_vocab_size: int) -> int:
    """The largest power of two the corpus supports (nanochat sizes are powers of two), else its maximum."""
    power = 1 << (max_vocab_size.bit_length() - 1)
    return power if power >= MIN_VOCAB_SIZE else max_vocab_size


def load_baselines() -> dict[str, Tokenizer]:
    found = {}
    for label, name in BASELINES:
        path = find_stock_file(name)
        if path is None:
            print(f"skipped {label} comparison: encoding not available offline")
        else:
            found[label] = Tokenizer.from_tiktoken_file(path, name)
    return found


def compression_table(tokenizers: dict[str, Tokenizer], texts: list[tuple[str, str]]) -> None:
    """Bytes per token (higher = better compression) of each tokenizer on each text."""
    print("\ncompression: tokens and bytes per token (higher bytes/token = better compression)")
    print(f"{'':<10} {'':>9}" + "".join(f" {label:>19}" for label in tokenizers))
    print(f"{'text':<10} {'bytes':>9}" + f" {'tokens':>11} {'b/tok':>7}" * len(tokenizers))
    for name, text in texts:
        n_bytes = len(text.encode("utf-8"))
        row = f"{name:<10} {n_bytes:>9,}"
        for label, tok in tokenizers.items():
            ids = tok.encode(text)
            if tok.decode(ids) != text:
                raise SystemExit(f"error: {label} does not round-trip the {name} text")
            row += f" {len(ids):>11,} {n_bytes / max(len(ids), 1):>7.2f}"
        print(row)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # data sources log what they read
    source = args.data or "embedded default corpus"
    print(f"tokenizer training: vocab_size {args.vocab_size:,}, max_chars {args.max_chars:,}, doc_cap {args.doc_cap:,}, data: {source}")
    try:
        return train_and_report(args)
    except DataSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def train_and_report(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    docs = capped_documents(iter_documents(args.data, split="train"), args.max_chars, args.doc_cap)
    try:
        tok = Tokenizer.train(docs, vocab_size=args.vocab_size)
    except TokenizerTrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        hint = f"--vocab-size {suggested_vocab_size(e.max_vocab_size)}"
        print(f"this corpus is too small or repetitive for --vocab-size {args.vocab_size}: pass e.g. {hint}, or more text with --data", file=sys.stderr)
        return 1
    print(f"trained in {time.monotonic() - t0:.1f}s")

    if tok.decode(tok.encode(ROUND_TRIP_TEXT)) != ROUND_TRIP_TEXT:
        raise SystemExit("error: the trained tokenizer does not round-trip the sample text")
    out = tok.save(tokenizer_dir(args.name))
    print(f"saved to {out}")

    val_docs = [doc for doc, _ in zip(iter_documents(args.data, split="val"), range(VAL_DOCS))]
    texts = [*SAMPLE_TEXTS, ("val", "\n".join(val_docs))]
    tokenizers = {**load_baselines(), "ours": tok}
    print("vocab sizes: " + ", ".join(f"{label} {t.vocab_size:,}" for label, t in tokenizers.items()))
    compression_table(tokenizers, texts)
    print(f"done in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
