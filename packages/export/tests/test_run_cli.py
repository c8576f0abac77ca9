"""The command lines: `python -m flaxchat.export.run` (without jax) and apps/export."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from flaxchat.export.generate import Sampling, TextStream, generate, stop_ids
from flaxchat.export.package import MODEL_FILE, read_package
from flaxchat.export.runtime import LiteRTModel
from flaxchat.model.checkpoint import save_checkpoint

APP = Path(__file__).resolve().parents[3] / "apps" / "export" / "__main__.py"
JAX_MODULES = {"jax", "jaxlib", "flax", "optax", "orbax"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flaxchat.export.run", *args], capture_output=True, text=True,
                          timeout=120)


def test_the_runner_loads_no_jax(exports):
    code = (
        "import json, sys\n"
        "from flaxchat.export.run import main\n"
        f"assert main([{str(exports['int8'])!r}, 'Hello', '--max-tokens', '4']) == 0\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "ai_edge_litert.compiled_model" in loaded and "tiktoken" in loaded
    assert not {m for m in loaded if m.split(".")[0] in JAX_MODULES}
    assert not {m for m in loaded if m.startswith(("flaxchat.model", "flaxchat.infer", "flaxchat.export.convert"))}


def test_chat_streams_the_greedy_reply(exports, tokenizer):
    result = _run(str(exports["fp32"] / MODEL_FILE), "Tell me a story", "-t", "0", "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    prompt = tokenizer.render_for_completion({"messages": [{"role": "user", "content": "Tell me a story"},
                                                           {"role": "assistant", "content": ""}]})
    with LiteRTModel.load(exports["fp32"]) as model:
        tokens = list(generate(model, prompt, 12, Sampling(0.0), stop_ids(tokenizer)))
    stream = TextStream(tokenizer)
    assert result.stdout == "".join(stream.feed(t) for t in tokens) + stream.flush() + "\n"
    assert "tok/s" in result.stderr


def test_sampled_completion_is_reproducible(exports):
    args = (str(exports["fp32"]), "Once upon a time", "--completion", "-t", "1.0", "-k", "20", "--max-tokens", "8")
    first, again, other = _run(*args, "--seed", "7"), _run(*args, "--seed", "7"), _run(*args, "--seed", "8")
    assert first.returncode == 0 and first.stdout == again.stdout != other.stdout


def test_errors_are_one_clear_line(exports, fp32_copy, tmp_path):
    (fp32_copy / MODEL_FILE).write_bytes(b"not a model")
    for args, message in (((str(fp32_copy), "hi"), "truncated or was replaced"),
                          ((str(tmp_path / "none.litert"), "hi"), "no exported model at"),
                          ((str(exports["fp32"]), "  "), "the message is empty")):
        result = _run(*args)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location("flaxchat_export_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_app_writes_a_package_and_prints_its_size(app, model, tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLAXCHAT_BASE_DIR", str(tmp_path / "base"))
    assert app.main([]) == 1
    err = capsys.readouterr().err
    assert "no model checkpoint under" in err and "apps/pretrain" in err
    save_checkpoint(tmp_path / "base" / "models" / "tiny", model, tokenizer, {"step": 3})
    assert app.main(["--quantize", "int8", "--prefill-lengths", "8,32", "--max-len", "64"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "base" / "exports" / "tiny-int8.litert"
    assert f"wrote {path}" in out and "MB (int8, fp32 " in out
    package = read_package(path)
    assert (package.config.quantization, package.config.max_len) == ("int8", 64)
    assert package.config.source == {"checkpoint": "tiny", "metadata": {"step": 3}}
