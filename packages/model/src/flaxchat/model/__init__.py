"""flaxchat.model: the nanochat GPT in Flax NNX."""

from flaxchat.model.config import ConfigError, GPTConfig
from flaxchat.model.gpt import GPT, cross_entropy, rms_norm
from flaxchat.model.kv_cache import KVCache

__all__ = ["GPT", "GPTConfig", "ConfigError", "KVCache", "cross_entropy", "rms_norm"]
