"""Releasing: one version for all six packages, wheels and sdists that say what they need, installs as users do.

The `install` tests build every package with `uv build`, then install wheels into fresh venvs (the
registry supplies third-party packages, pinned to uv.lock's versions so uv's cache serves them) and
run the workspace's own artefacts there: a saved tokenizer, a model checkpoint, a LiteRT package.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = Path(__file__).resolve().parent / "install_checks"
PACKAGES = ("tokenizer", "model", "train", "infer", "evals", "export")
INDEX = os.environ.get("UV_DEFAULT_INDEX") or "https://pypi.org/simple/"
TRAINING_ONLY = ("grain", "rustbpe", "orbax-checkpoint", "flaxchat-train")


def pyproject(package: str) -> dict:
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())["project"]


def requirements(project: dict) -> list[str]:
    """Every requirement string: base dependencies, then each extra's with its `extra == ...` marker."""
    reqs = list(project.get("dependencies", []))
    for extra, deps in project.get("optional-dependencies", {}).items():
        reqs += [f"{dep} ; extra == '{extra}'" for dep in deps]
    return reqs


# ---- one version ------------------------------------------------------------------------------


def test_every_package_has_the_version_file_version_and_pins_its_minor():
    version = (ROOT / "VERSION").read_text().strip()
    major, minor, _ = version.split(".", 2)
    pins = 0
    for package in PACKAGES:
        project = pyproject(package)
        assert project["name"] == f"flaxchat-{package}" and project["version"] == version, package
        for req in requirements(project):
            m = re.match(r"(flaxchat-[a-z]+)(\[[a-z,]+\])?(\S*)", req)
            if m:
                assert m[1].removeprefix("flaxchat-") in PACKAGES and m[3] == f"=={major}.{minor}.*", (package, req)
                pins += 1
    assert pins >= 10  # model, infer, evals, export and train all depend on siblings


def _bump(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bump_version.py"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def workspace_copy(tmp_path) -> Path:
    shutil.copy(ROOT / "VERSION", tmp_path / "VERSION")
    for package in PACKAGES:
        (tmp_path / "packages" / package).mkdir(parents=True)
        shutil.copy(ROOT / "packages" / package / "pyproject.toml", tmp_path / "packages" / package)
    return tmp_path


def test_bump_rewrites_versions_and_pins_and_nothing_else(workspace_copy):
    old = {p: (workspace_copy / "packages" / p / "pyproject.toml").read_text() for p in PACKAGES}
    result = _bump(workspace_copy, "--part", "major")
    assert result.returncode == 0, result.stderr
    new_version = f"{int((ROOT / 'VERSION').read_text().split('.')[0]) + 1}.0.0"
    assert (workspace_copy / "VERSION").read_text() == new_version + "\n" and "uv lock" in result.stdout
    for package in PACKAGES:
        before, after = old[package], (workspace_copy / "packages" / package / "pyproject.toml").read_text()
        project = tomllib.loads(after)["project"]
        assert project["version"] == new_version
        changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
        flaxchat_deps = [r for r in requirements(project) if r.startswith("flaxchat-")]
        assert len(changed) == 1 + len(flaxchat_deps)  # the version line and one line per pin
        assert all(f"=={new_version[:-2]}.*" in r for r in flaxchat_deps)
    assert _bump(workspace_copy).returncode == 0  # the check mode agrees


def test_bump_refuses_bad_versions_with_a_clear_message(workspace_copy):
    current = (ROOT / "VERSION").read_text().strip()
    for args, message in (((current,), "not newer than"), (("1.2",), "not a release version"),
                          (("9.0.0", "--part", "patch"), "not both")):
        result = _bump(workspace_copy, *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    (workspace_copy / "packages" / "model" / "pyproject.toml").write_text(
        (ROOT / "packages" / "model" / "pyproject.toml").read_text().replace(f'version = "{current}"', 'version = "0.0.1"'))
    result = _bump(workspace_copy)
    assert result.returncode == 1 and "model" in result.stderr and "0.0.1" in result.stderr


# ---- builds -----------------------------------------------------------------------------------


def _uv(*args, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.fail("uv is not on PATH: install it with `pip install uv`")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    result = subprocess.run([uv, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"uv {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Every package's wheel and sdist, built once per test run."""
    out = tmp_path_factory.mktemp("dist")
    _uv("build", "--all-packages", "--out-dir", str(out), "--quiet", cwd=ROOT)
    return out


def _artifact(dist: Path, package: str, suffix: str) -> Path:
    (path,) = dist.glob(f"flaxchat_{package}-*{suffix}")
    return path


def _metadata(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode().splitlines()


def _normal(req: str) -> str:
    """A requirement with spacing and quoting normalized, for comparison."""
    return re.sub(r"\s+", "", req).replace('"', "'")


@pytest.mark.install
def test_wheels_declare_exactly_their_own_dependencies(dist):
    version = (ROOT / "VERSION").read_text().strip()
    for package in PACKAGES:
        wheel = _artifact(dist, package, ".whl")
        assert wheel.name == f"flaxchat_{package}-{version}-py3-none-any.whl"
        meta = _metadata(wheel)
        declared = sorted(_normal(r.split(":", 1)[1]) for r in meta if r.startswith("Requires-Dist:"))
        assert declared == sorted(map(_normal, requirements(pyproject(package)))), package
        assert {line.split(": ", 1)[1] for line in meta if line.startswith("Provides-Extra:")} == set(
            pyproject(package).get("optional-dependencies", {})), package


@pytest.mark.install
def test_wheels_share_the_namespace_and_sdists_rebuild_the_same_wheel(dist, tmp_path):
    for package in PACKAGES:
        with zipfile.ZipFile(_artifact(dist, package, ".whl")) as z:
            files = sorted(n for n in z.namelist() if not n.endswith("/"))
        assert "flaxchat/__init__.py" not in files, f"flaxchat-{package} would shadow the other packages"
        assert f"flaxchat/{package}/__init__.py" in files
        sdist = _artifact(dist, package, ".tar.gz")
        with tarfile.open(sdist) as tar:
            assert not [n for n in tar.getnames() if n.endswith("src/flaxchat/__init__.py")]
        out = tmp_path / package
        _uv("build", "--wheel", str(sdist), "--out-dir", str(out), "--quiet", cwd=tmp_path)
        with zipfile.ZipFile(_artifact(out, package, ".whl")) as z:
            assert sorted(n for n in z.namelist() if not n.endswith("/")) == files, package


# ---- installs ---------------------------------------------------------------------------------


@functools.cache
def _index_reachable() -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(INDEX, method="HEAD"), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def installer(dist, tmp_path_factory):
    """install(name, *requirements) -> the python of a fresh venv with them installed from the built wheels."""
    if not _index_reachable():
        pytest.skip(f"no package index reachable at {INDEX}: the install tests need one for third-party packages")
    work = tmp_path_factory.mktemp("venvs")
    # uv.lock's versions as constraints: what the workspace tests ran, and already in uv's cache.
    constraints = work / "constraints.txt"
    _uv("export", "--frozen", "--no-hashes", "--all-packages", "--all-extras", "--no-dev", "--no-emit-workspace",
        "--no-header", "--no-annotate", "--quiet", "-o", str(constraints), cwd=ROOT)

    def install(name: str, *reqs: str) -> Path:
        venv = work / name
        if not venv.exists():
            _uv("venv", "--quiet", "--python", sys.executable, str(venv), cwd=work)
        python = venv / "bin" / "python"
        _uv("pip", "install", "--quiet", "--python", str(python), "--find-links", str(dist), "-c", str(constraints),
            *reqs, cwd=work)
        return python

    return install


def _installed(python: Path, *names: str) -> dict[str, bool]:
    code = ("import importlib.metadata as m, json, sys\n"
            "def has(n):\n    try:\n        m.distribution(n)\n        return True\n"
            "    except m.PackageNotFoundError:\n        return False\n"
            "print(json.dumps({n: has(n) for n in sys.argv[1:]}))")
    return json.loads(subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                                     check=True).stdout)


def _run_json(python: Path, *args: str) -> dict:
    result = subprocess.run([str(python), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


TOKENIZER_CASES = {
    "texts": ["Hello world!", "  héllo, 世界 🌍\n\tnumbers 12345", "the theme of the thesis"],
    "conversation": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                                  {"role": "assistant", "content": "Hello! 2+2 is 4."}]},
    "corpus": ["the cat sat on the mat. " * 20, "the theme of the thesis is the thing. " * 20, "hello world " * 30],
    "vocab_size": 290,
}


@pytest.mark.install
def test_tokenizer_alone_reads_a_workspace_tokenizer_and_trains_with_its_extra(installer, tmp_path):
    from flaxchat.tokenizer import Tokenizer

    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(TOKENIZER_CASES))
    workspace = Tokenizer.train(TOKENIZER_CASES["corpus"], vocab_size=TOKENIZER_CASES["vocab_size"])
    workspace.save(tmp_path / "tok")
    expected = {
        "vocab_size": workspace.vocab_size,
        "ids": [workspace.encode(t) for t in TOKENIZER_CASES["texts"]],
        "decoded": TOKENIZER_CASES["texts"],
        "conversation": [list(x) for x in workspace.render_conversation(TOKENIZER_CASES["conversation"])],
        "prompt": workspace.render_for_completion(TOKENIZER_CASES["conversation"]),
    }
    assert any(len(ids) < len(text.encode()) for ids, text in zip(expected["ids"], TOKENIZER_CASES["texts"]))

    python = installer("tokenizer", "flaxchat-tokenizer")
    assert _installed(python, "flaxchat-tokenizer", "tiktoken", "rustbpe", "jax", "flaxchat-model") == {
        "flaxchat-tokenizer": True, "tiktoken": True, "rustbpe": False, "jax": False, "flaxchat-model": False}
    used = _run_json(python, str(CHECKS / "tokenizer_check.py"), "use", str(tmp_path / "tok"), str(cases))
    assert {k: used[k] for k in expected} == expected

    installer("tokenizer", "flaxchat-tokenizer[train]")
    trained = _run_json(python, str(CHECKS / "tokenizer_check.py"), "train", str(cases))
    assert {k: trained[k] for k in expected} == expected  # the same merges as the workspace's training
    assert "rustbpe" in trained["modules"] and "rustbpe" not in used["modules"]


def _tiny_checkpoint(path: Path) -> Path:
    from flax import nnx
    from flaxchat.model import GPT, GPTConfig
    from flaxchat.model.checkpoint import save_checkpoint
    from flaxchat.tokenizer import Tokenizer
    from flaxchat.tokenizer.spec import nanochat_spec

    tokenizer = Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)}))
    config = GPTConfig(sequence_len=128, vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_kv_head=1,
                       n_embd=32, window_pattern="L")
    return save_checkpoint(path, GPT(config, rngs=nnx.Rngs(3)), tokenizer, {"note": "random weights"})


@pytest.mark.install
def test_infer_serves_a_workspace_checkpoint_without_training_packages(installer, tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "tiny")
    python = installer("infer", "flaxchat-infer")
    installed = _installed(python, "flaxchat-infer", "flaxchat-model", "flaxchat-tokenizer", *TRAINING_ONLY)
    assert installed["flaxchat-infer"] and installed["flaxchat-model"] and installed["flaxchat-tokenizer"]
    # flax itself requires orbax-checkpoint, so only grain, rustbpe and flaxchat-train can be absent.
    assert [n for n in ("grain", "rustbpe", "flaxchat-train") if installed[n]] == []

    out = _run_json(python, str(CHECKS / "serve_check.py"), str(checkpoint))
    assert out["content_type"].startswith("text/event-stream")
    assert len(out["deltas"]) > 1 and out["finish_reason"] in ("stop", "length")
    assert 0 < out["usage"]["completion_tokens"] <= 12
    assert "".join(out["deltas"]) == out["whole"]  # greedy: the stream adds up to the whole reply
    loaded = {m.split(".")[0] for m in out["modules"]}
    assert "flaxchat" in loaded and not loaded & {"grain", "rustbpe", "orbax"}
    assert not [m for m in out["modules"] if m.startswith("flaxchat.train")]


@pytest.mark.install
def test_export_runner_runs_a_workspace_package_without_jax(installer, tmp_path):
    from flaxchat.export.convert import ExportSettings, export_model
    from flaxchat.model.checkpoint import load_checkpoint

    model, tokenizer, _ = load_checkpoint(_tiny_checkpoint(tmp_path / "tiny"))
    package = export_model(model, tokenizer, tmp_path / "tiny.litert", ExportSettings(prefill_lengths=(16,)),
                           source={"checkpoint": "tiny"}).path
    args = ("-m", "flaxchat.export.run", str(package), "hi", "--max-tokens", "8", "--temperature", "0")
    here = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert here.returncode == 0 and here.stdout.strip(), here.stderr

    python = installer("export", "flaxchat-export")
    assert _installed(python, "flaxchat-export", "flaxchat-tokenizer", "ai-edge-litert", "jax", "flax",
                      "flaxchat-model") == {"flaxchat-export": True, "flaxchat-tokenizer": True,
                                            "ai-edge-litert": True, "jax": False, "flax": False,
                                            "flaxchat-model": False}
    there = subprocess.run([str(python), *args], capture_output=True, text=True, timeout=300)
    assert there.returncode == 0, there.stderr
    assert there.stdout == here.stdout  # greedy: the installed runner gives the workspace's reply
