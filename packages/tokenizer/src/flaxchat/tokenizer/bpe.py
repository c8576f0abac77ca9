"""Tokenizer: byte-level BPE trained with rustbpe, run with tiktoken (nanochat's RustBPETokenizer)."""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tiktoken

from flaxchat.tokenizer import chat, files, stock
from flaxchat.tokenizer.paths import tokenizer_dir
from flaxchat.tokenizer.spec import SPECIAL_TOKENS, SPLIT_PATTERN, EncodingSpec, nanochat_spec

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


class TokenizerTrainingError(Exception):
    """Training cannot produce the requested tokenizer; max_vocab_size is what the text supports."""

    def __init__(self, message: str, max_vocab_size: int):
        super().__init__(message)
        self.max_vocab_size = max_vocab_size


class Tokenizer:
    def __init__(self, spec: EncodingSpec):
        self.spec = spec
        self._enc = tiktoken.Encoding(spec.name, pat_str=spec.pattern, mergeable_ranks=spec.ranks, special_tokens=spec.special_tokens)
        self._token_bytes = None

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 32768) -> "Tokenizer":
        """Train on `texts` (streamed); vocab_size counts the 9 special tokens."""
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
        try:
            import rustbpe  # only needed for training: the `train` extra
        except ImportError:
            raise ImportError("training a tokenizer needs rustbpe: pip install 'flaxchat-tokenizer[train]'") from None
        trainer = rustbpe.Tokenizer()
        n_ordinary = vocab_size - len(SPECIAL_TOKENS)
        trainer.train_from_iterator(iter(texts), n_ordinary, pattern=SPLIT_PATTERN)
        ranks = {bytes(tok): rank for tok, rank in trainer.get_mergeable_ranks()}
        # rustbpe silently stops early when no pair is left to merge.
        if len(ranks) < n_ordinary:
            supported = len(ranks) + len(SPECIAL_TOKENS)
            raise TokenizerTrainingError(
                f"the training text only supports {supported} tokens ({len(ranks) - 256} merge(s)), "
                f"not the requested vocab_size {vocab_size}: use a vocab_size of at most {supported} or train on more (varied) text",
                max_vocab_size=supported,
            )
        return cls(nanochat_spec(ranks))

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "Tokenizer":
        """Load a saved tokenizer (default: the `default` one under the base dir); TokenizerFileError if unusable."""
        directory = Path(directory) if directory is not None else tokenizer_dir()
        spec = files.load(directory)
        try:
            return cls(spec)
        except ValueError as e:  # tiktoken rejects e.g. an invalid pattern
            raise files.file_error(directory, f"tiktoken cannot build this encoding ({e})") from None

    @classmethod
    def from_tiktoken_file(cls, path: str | Path, name: str) -> "Tokenizer":
        """Wrap a stock encoding ('gpt2' or 'cl100k_base') from its ranks file; for comparisons only."""
        return cls(stock.stock_spec(Path(path), name))

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.tiktoken + tokenizer.json atomically into `directory`."""
        files.save(Path(directory), self.spec)
        return Path(directory)

    # ---- encoding -----------------------------------------------------------------------------

    def _special_id(self, token: str | int) -> int:
        if isinstance(token, str):
            return self.encode_special(token)
        if isinstance(token, (int, np.integer)) and 0 <= token < self.vocab_size:
            return int(token)
        raise ValueError(f"expected a special token name or an id in [0, {self.vocab_size}), got {token!r}")

    def encode(self, text: str | list[str], prepend: str | int | None = None, append: str | int | None = None, num_threads: int = 8):
        """Plain text -> ids; special-token strings inside text are ordinary bytes, never special ids."""
        head = [self._special_id(prepend)] if prepend is not None else []
        tail = [self._special_id(append)] if append is not None else []
        if isinstance(text, str):
            return head + self._enc.encode_ordinary(text) + tail
        if isinstance(text, list):
            return [head + ids + tail for ids in self._enc.encode_ordinary_batch(text, num_threads=num_threads)]
        raise TypeError(f"encode takes a str or a list of str, got {type(text).__name__}")

    __call__ = encode

    def encode_special(self, name: str) -> int:
        try:
            return self.spec.special_tokens[name]
        except KeyError:
            raise ValueError(f"unknown special token {name!r}; known: {list(self.spec.special_tokens)}") from None

    def decode(self, ids) -> str:
        return self._enc.decode(ids.tolist() if isinstance(ids, np.ndarray) else ids)

    def decode_single_token_bytes(self, token_id: int) -> bytes:
        return self._enc.decode_single_token_bytes(token_id)

    def id_to_token(self, token_id: int) -> str:
        return self._enc.decode([token_id])

    @property
    def bos_id(self) -> int:
        return self.spec.special_tokens[self.spec.bos_token]

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self._enc.n_vocab

    def token_bytes(self) -> np.ndarray:
        """int32[vocab_size]: raw byte length of each token, 0 for special tokens (for bits per byte)."""
        if self._token_bytes is None:
            counts = np.zeros(self.vocab_size, dtype=np.int32)
            for tok, rank in self.spec.ranks.items():
                counts[rank] = len(tok)
            self._token_bytes = counts
        return self._token_bytes.copy()

    # ---- chat ---------------------------------------------------------------------------------

    def render_conversation(self, conversation: dict, max_tokens: int = 2048) -> tuple[list[int], list[int]]:
        return chat.render_conversation(self, conversation, max_tokens)

    def render_for_completion(self, conversation: dict) -> list[int]:
        return chat.render_for_completion(self, conversation)

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.spec.name!r}, vocab_size={self.vocab_size})"
