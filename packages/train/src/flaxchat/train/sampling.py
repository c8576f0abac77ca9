"""Greedy samples from fixed prompts, to watch a model learn during training."""

from __future__ import annotations

from flaxchat.infer.engine import Engine
from flaxchat.model import GPT
from flaxchat.tokenizer import Tokenizer

STORY_PROMPTS = ("Once upon a time", "The little dog", "One day, Lily")


def greedy_samples(model: GPT, tokenizer: Tokenizer, prompts=STORY_PROMPTS, max_tokens: int = 16) -> list[tuple[str, str]]:
    """(prompt, greedy continuation) for each BOS-prepended prompt, through the inference Engine."""
    engine = Engine(model, tokenizer)
    samples = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt, prepend=tokenizer.bos_id)
        sequences, _ = engine.generate_batch(ids, num_samples=1, max_tokens=max_tokens, temperature=0.0)
        samples.append((prompt, tokenizer.decode(sequences[0][len(ids):])))
    return samples
