"""GPT configuration: nanochat's depth-based sizing, window pattern, and (de)serialization."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

MLP_KINDS = ("relu2", "gelu")


class ConfigError(ValueError):
    """A model configuration is invalid or cannot be read."""


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768
    window_pattern: str = "SSSL"
    # Beyond nanochat: switches used by flaxchat's own experiments.
    mlp: str = "relu2"
    tie_embeddings: bool = False
    pad_vocab_to: int = 64
    rope_base: float = 100000.0
    softcap: float = 15.0

    def __post_init__(self):
        for name in ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "pad_vocab_to"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ConfigError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
        pattern = self.window_pattern.upper()
        if not pattern or set(pattern) - {"S", "L"}:
            raise ConfigError(f"window_pattern must be a non-empty string of S and L, got {self.window_pattern!r}")
        object.__setattr__(self, "window_pattern", pattern)
        if self.mlp not in MLP_KINDS:
            raise ConfigError(f"mlp must be one of {MLP_KINDS}, got {self.mlp!r}")
        # The smear gate reads 24 channels and the value-embedding gate 12.
        if self.n_embd < 24:
            raise ConfigError(f"n_embd must be at least 24, got {self.n_embd}")

    @classmethod
    def from_depth(
        cls,
        depth: int,
        aspect_ratio: int = 64,
        head_dim: int = 128,
        max_seq_len: int = 2048,
        window_pattern: str = "SSSL",
        vocab_size: int = 32768,
        **overrides: Any,
    ) -> "GPTConfig":
        """nanochat's sizing: width = depth * aspect_ratio rounded up to a multiple of head_dim."""
        if depth <= 0 or aspect_ratio <= 0 or head_dim <= 0:
            raise ConfigError("depth, aspect_ratio and head_dim must be positive")
        model_dim = math.ceil(depth * aspect_ratio / head_dim) * head_dim
        n_head = model_dim // head_dim
        return cls(
            sequence_len=max_seq_len,
            vocab_size=vocab_size,
            n_layer=depth,
            n_head=n_head,
            n_kv_head=overrides.pop("n_kv_head", n_head),
            n_embd=model_dim,
            window_pattern=window_pattern,
            **overrides,
        )

    # Derived quantities ------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // self.pad_vocab_to) * self.pad_vocab_to

    @property
    def window_sizes(self) -> tuple[int, ...]:
        """Left window per layer (keys i-left..i are visible); the last layer is always long."""
        long = self.sequence_len
        short = -(-long // 4 // 128) * 128
        sizes = [long if self.window_pattern[i % len(self.window_pattern)] == "L" else short for i in range(self.n_layer)]
        sizes[-1] = long
        return tuple(sizes)

    def has_value_embed(self, layer: int) -> bool:
        return layer % 2 == (self.n_layer - 1) % 2

    @property
    def value_embed_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n_layer) if self.has_value_embed(i))

    @property
    def backout_layer(self) -> int:
        return self.n_layer // 2

    # Serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self, **overrides: Any) -> "GPTConfig":
        return self.from_dict({**self.to_dict(), **overrides})

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = _dump_yaml(self.to_dict()) if path.suffix in (".yaml", ".yml") else json.dumps(self.to_dict(), indent=2)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "GPTConfig":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read model config {path}: {e.strerror or e}") from None
        try:
            data = _load_yaml(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except ValueError as e:
            raise ConfigError(f"model config {path} is not valid {path.suffix.lstrip('.') or 'json'}: {e}") from None
        return cls.from_dict(data)


def _dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).rstrip()


def _load_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(str(e)) from None
