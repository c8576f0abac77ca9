"""Generation on an exported model: greedy or sampled (temperature, top-k, seeded numpy), streamed. No jax."""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from flaxchat.export.errors import GenerationError
from flaxchat.export.runtime import LiteRTModel
from flaxchat.tokenizer import Tokenizer

STOP_TOKENS = ("<|assistant_end|>", "<|bos|>")  # as the Engine: a reply ends at either


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy (argmax); top_k None or 0 = the whole vocabulary."""

    temperature: float = 0.0
    top_k: int | None = None
    seed: int = 42

    def __post_init__(self):
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not np.isfinite(self.temperature) or self.temperature < 0:
            raise GenerationError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        top_k = self.top_k
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise GenerationError(f"top_k must be None or an integer >= 0, got {self.top_k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GenerationError(f"seed must be an integer >= 0, got {self.seed!r}")


def sample_token(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """One token id from fp32 logits (vocab,): argmax, or a draw from softmax(logits / T) over the top k."""
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    candidates = np.arange(scaled.size)
    if sampling.top_k and sampling.top_k < scaled.size:
        candidates = np.argpartition(scaled, -sampling.top_k)[-sampling.top_k:]
    weights = np.exp(scaled[candidates] - scaled[candidates].max())
    return int(candidates[rng.choice(candidates.size, p=weights / weights.sum())])


def stop_ids(tokenizer: Tokenizer) -> frozenset[int]:
    return frozenset(tokenizer.encode_special(name) for name in STOP_TOKENS)


def generate(model: LiteRTModel, prompt: Sequence[int], max_tokens: int, sampling: Sampling = Sampling(),
             stops: frozenset[int] = frozenset()) -> Iterator[int]:
    """Stream up to max_tokens ids after `prompt` (a fresh sequence); ends before a token in `stops`."""
    if not prompt:
        raise GenerationError("the prompt is empty: pass at least one token (e.g. <|bos|>)")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise GenerationError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    # The last token is sampled but never fed back, so it needs no cache position.
    if len(prompt) + max_tokens - 1 > model.max_len:
        raise GenerationError(f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds the exported KV "
                              f"cache ({model.max_len} positions): lower max_tokens or re-export with a larger "
                              "--max-len")
    rng = np.random.default_rng(sampling.seed)
    model.reset()
    logits = model.forward(prompt)
    for step in range(max_tokens):
        token = sample_token(logits, sampling, rng)
        if token in stops:
            return
        yield token
        if step + 1 < max_tokens:
            logits = model.forward([token])


def chat_prompt(tokenizer: Tokenizer, message: str) -> list[int]:
    """<|bos|> <|user_start|> message <|user_end|> <|assistant_start|>: one user turn, the assistant primed."""
    if not message.strip():
        raise GenerationError("the message is empty")
    conversation = {"messages": [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]}
    return tokenizer.render_for_completion(conversation)


class TextStream:
    """Token ids -> text pieces, holding back a UTF-8 character until all its bytes have arrived."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._decoder.decode(self._tokenizer.decode_single_token_bytes(token))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
