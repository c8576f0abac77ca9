"""Self-describing model checkpoints: config + weights + tokenizer + metadata in one directory.

Layout of a checkpoint directory:
    config.json        GPTConfig
    model.safetensors  fp32 weights, flaxchat names and (in, out) layout
    tokenizer/         the tokenizer files (flaxchat.tokenizer format)
    meta.json          format version, sha256 of the weights, and free-form metadata
                       (step, losses, data position, ...)

Writes are atomic: everything goes into a temporary sibling directory that is renamed into
place, so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxchat.model.config import ConfigError, GPTConfig
from flaxchat.model.gpt import GPT
from flaxchat.model.params import ParamMismatchError, assign_params, named_params
from flaxchat.tokenizer import Tokenizer, TokenizerFileError
from flaxchat.tokenizer.files import replace_directory, sha256_file
from flaxchat.tokenizer.paths import base_dir

FORMAT = "flaxchat-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


class CheckpointError(Exception):
    """A model checkpoint is missing, incomplete, corrupt or does not fit its config."""


def models_dir() -> Path:
    return base_dir() / "models"


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A path to a checkpoint directory, or the name of one under <base>/models."""
    path = Path(name_or_path).expanduser()
    if (path / "meta.json").exists() or os.sep in str(name_or_path):
        return path
    return models_dir() / str(name_or_path)


def _write_weights(path: Path, arrays: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, str(path))


def save_checkpoint(
    path: str | Path, model: GPT, tokenizer: Tokenizer, metadata: dict[str, Any] | None = None
) -> Path:
    """Atomically write model + config + tokenizer + metadata to `path` (replacing it)."""
    path = Path(path)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(
            f"tokenizer vocab ({tokenizer.vocab_size}) != model vocab ({model.config.vocab_size})"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        model.config.save(tmp / "config.json")
        _write_weights(tmp / WEIGHTS, named_params(model))
        tokenizer.save(tmp / "tokenizer")
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "weights_sha256": sha256_file(tmp / WEIGHTS),
            "metadata": metadata or {},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        hint = " (train one with `uv run apps/pretrain`)" if not path.exists() else ""
        raise CheckpointError(f"no model checkpoint at {path}: meta.json is missing{hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{meta_file} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a flaxchat model checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {meta.get('format_version')}, this flaxchat reads {FORMAT_VERSION}"
        )
    return meta


def load_config(path: str | Path) -> GPTConfig:
    path = resolve_checkpoint(path)
    try:
        return GPTConfig.load(path / "config.json")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_checkpoint(
    path: str | Path, *, dtype=jnp.float32, remat: bool = False
) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """Load (model, tokenizer, metadata); every kind of damage raises CheckpointError."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    config = load_config(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"checkpoint {path} is incomplete: {WEIGHTS} is missing")
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: {WEIGHTS} does not match its recorded sha256")
    try:
        tokenizer = Tokenizer.load(path / "tokenizer")
    except TokenizerFileError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"checkpoint {path}: tokenizer vocab ({tokenizer.vocab_size}) != config vocab ({config.vocab_size})"
        )
    from safetensors.numpy import load_file

    arrays = load_file(str(weights))
    model = nnx.eval_shape(lambda: GPT(config, rngs=nnx.Rngs(0), dtype=dtype, remat=remat))
    try:
        assign_params(model, arrays, source=str(weights))
    except ParamMismatchError as e:
        raise CheckpointError(str(e)) from None
    return model, tokenizer, meta["metadata"]
