"""Where flaxchat keeps its artifacts (imported by the whole project: keep it tiny)."""

import os
from pathlib import Path


def base_dir() -> Path:
    """Env FLAXCHAT_BASE_DIR, else ~/.cache/flaxchat."""
    env = os.environ.get("FLAXCHAT_BASE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flaxchat"


def tokenizer_dir(name: str = "default") -> Path:
    return base_dir() / "tokenizers" / name
