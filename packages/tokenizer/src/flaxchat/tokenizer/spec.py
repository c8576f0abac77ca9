"""What defines an encoding: split pattern, mergeable ranks, special tokens (nanochat's values)."""

from dataclasses import dataclass

# GPT-4's pattern with numbers split in groups of 1-2 instead of 1-3 (nanochat/tokenizer.py).
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

# In id order; they take the ids right after the ordinary (merged) tokens.
SPECIAL_TOKENS = (
    "<|bos|>",  # starts every document
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",  # assistant calls the python tool
    "<|python_end|>",
    "<|output_start|>",  # tool output fed back to the assistant
    "<|output_end|>",
)
BOS_TOKEN = "<|bos|>"


@dataclass(frozen=True)
class EncodingSpec:
    """Everything needed to build a tiktoken Encoding; validated on construction."""

    name: str
    pattern: str
    ranks: dict[bytes, int]  # token bytes -> id (= merge priority)
    special_tokens: dict[str, int]  # name -> id, in id order
    bos_token: str

    def __post_init__(self):
        if not self.ranks:
            raise ValueError("an encoding needs ordinary tokens")
        rank_ids = set(self.ranks.values())
        if len(rank_ids) != len(self.ranks):
            raise ValueError("two ordinary tokens share an id")
        if any(not isinstance(i, int) or i < 0 for i in rank_ids):
            raise ValueError("token ids must be non-negative integers")
        special_ids = set(self.special_tokens.values())
        if len(special_ids) != len(self.special_tokens):
            raise ValueError("two special tokens share an id")
        if special_ids & rank_ids:
            raise ValueError("a special token id collides with an ordinary token id")
        if self.bos_token not in self.special_tokens:
            raise ValueError(f"BOS token {self.bos_token!r} is not among the special tokens")

    @property
    def vocab_size(self) -> int:
        return max([*self.ranks.values(), *self.special_tokens.values()]) + 1


def nanochat_spec(ranks: dict[bytes, int], name: str = "flaxchat") -> EncodingSpec:
    """Our layout: ordinary ids 0..n-1 (bytes are 0..255), then the 9 specials in order."""
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("ordinary token ids must be exactly 0..n-1")
    if any(ranks.get(bytes([b])) != b for b in range(256)):
        raise ValueError("single bytes must have id = byte value")
    n = len(ranks)
    specials = {tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return EncodingSpec(name, SPLIT_PATTERN, ranks, specials, BOS_TOKEN)
