"""The edges are the product: serving and edge export never pull in training dependencies."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = {"grain", "rustbpe", "flaxchat-train"}


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.fail("uv is not on PATH: install it with `pip install uv`")
    return uv


def _dependency_tree(package: str) -> set[str]:
    out = subprocess.run(
        [_uv(), "tree", "--package", package, "--frozen", "--no-dev", "--python-version", "3.11"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    # The root's own optional extras are listed as "(extra: NAME)" children: not installed by default.
    # Deeper "(extra: ...)" marks an extra that a dependency requested, which is installed.
    names, root_extra_depth = set(), None
    for line in out.splitlines():
        m = re.match(r"^([\s│├└─]*)([A-Za-z0-9_.\-]+) v\S+", line)
        if not m:
            continue
        depth = len(m.group(1))
        if root_extra_depth is not None:
            if depth > root_extra_depth:
                continue
            root_extra_depth = None
        if depth == 4 and "(extra:" in line:
            root_extra_depth = depth
            continue
        names.add(m.group(2).lower())
    return names


@pytest.mark.parametrize("package", ["flaxchat-infer", "flaxchat-export", "flaxchat-model", "flaxchat-tokenizer"])
def test_serving_and_edge_packages_resolve_without_training_deps(package):
    tree = _dependency_tree(package)
    assert package in tree and len(tree) > 1
    assert not tree & TRAINING_ONLY, f"{package} pulls in {sorted(tree & TRAINING_ONLY)}"


def test_training_package_does_pull_them():
    """Guards the check itself: the tree parser must see what flaxchat-train brings."""
    assert TRAINING_ONLY - {"flaxchat-train"} <= _dependency_tree("flaxchat-train")


SERVING_MODULES = ["flaxchat.tokenizer", "flaxchat.model", "flaxchat.model.checkpoint"]
JAX_FREE_MODULES = ["flaxchat.tokenizer"]


def _loaded_modules(modules: list[str]) -> set[str]:
    code = "import importlib, json, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _forbidden(loaded: set[str], roots: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in roots or m == "flaxchat.train" or m.startswith("flaxchat.train."))


def test_serving_import_path_loads_no_training_code():
    loaded = _loaded_modules(SERVING_MODULES)
    assert "flaxchat.model.gpt" in loaded
    assert not _forbidden(loaded, {"grain", "rustbpe", "orbax"})


def test_tokenizer_import_loads_neither_jax_nor_training_code():
    loaded = _loaded_modules(JAX_FREE_MODULES)
    assert "tiktoken" in loaded
    assert not _forbidden(loaded, {"grain", "rustbpe", "jax", "flax"})


def test_server_and_batcher_import_no_training_code():
    """optax is not in the list: flax.nnx itself imports it (for nnx.Optimizer), so every model user has it."""
    loaded = _loaded_modules(["flaxchat.infer.server", "flaxchat.infer.batcher"])
    assert {"flaxchat.infer.batcher", "fastapi", "uvicorn"} <= loaded
    assert not _forbidden(loaded, {"grain", "rustbpe", "orbax"})


def test_export_runner_import_loads_no_jax():
    """The edge runner works with ai-edge-litert, tiktoken and numpy alone."""
    loaded = _loaded_modules(["flaxchat.export.run"])
    assert "ai_edge_litert.compiled_model" in loaded and "tiktoken" in loaded
    assert not _forbidden(loaded, {"grain", "rustbpe", "jax", "jaxlib", "flax"})
