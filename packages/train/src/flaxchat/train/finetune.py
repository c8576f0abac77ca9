"""What SFT and RL share: the source checkpoint by name, where the result goes, saving it."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import jax

from flaxchat.model import GPT
from flaxchat.model.checkpoint import CheckpointError, load_checkpoint, models_dir, read_meta, save_checkpoint
from flaxchat.model.cli import DTYPES
from flaxchat.tokenizer import Tokenizer
from flaxchat.train.pretrain import run_dir

log = logging.getLogger(__name__)

class FinetuneError(ValueError):
    """A fine-tuning run cannot start as configured."""


@dataclasses.dataclass(frozen=True)
class Output:
    name: str  # the run's name: runs/NAME holds metrics and the report
    model_path: Path  # where the fine-tuned checkpoint is written

    @property
    def run_dir(self) -> Path:
        return run_dir(self.name)


def output_for(source: str, out: str | None, suffix: str) -> Output:
    """--out as a name (under <base>/models) or a path; default: the source's name + suffix."""
    if out is None:
        out = Path(str(source).rstrip(os.sep)).name + suffix
    path = Path(out).expanduser()
    model_path = path if os.sep in out else models_dir() / out
    return Output(name=model_path.name, model_path=model_path)


def newest_of_kind(kind: str, hint: str) -> str:
    """The name of the most recently saved model under <base>/models whose metadata kind is `kind`
    ("base", "sft", ...), as nanochat picks the model to fine-tune when none is named."""
    found = []
    for path in models_dir().glob("*"):
        try:
            if read_meta(path)["metadata"].get("kind") == kind:
                found.append(path)
        except CheckpointError:  # not a checkpoint (or a damaged one): not a candidate
            continue
    if not found:
        raise CheckpointError(f"no {kind} model under {models_dir()}: {hint}, or pass --model NAME|PATH")
    return max(found, key=lambda p: (p / "meta.json").stat().st_mtime).name


def load_source(source: str, dtype: str) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """The model to fine-tune, by name or path (CheckpointError says what is missing)."""
    if dtype not in DTYPES:
        raise FinetuneError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model, tokenizer, meta = load_checkpoint(source, dtype=DTYPES[dtype])
    log.info("loaded %s (%s, %d layers, width %d)", source, meta.get("kind", "model"),
             model.config.n_layer, model.config.n_embd)
    return model, tokenizer, meta


def save_result(output: Output, model: GPT, tokenizer: Tokenizer, metadata: dict[str, Any]) -> Path | None:
    """Write the checkpoint (process 0 only; returns None elsewhere)."""
    if jax.process_index() != 0:
        return None
    return save_checkpoint(output.model_path, model, tokenizer, metadata)
