"""`apps/bench decode`: the table, then one JSON document with every measurement, on the tiny test model.

The app runs in-process on a checkpoint of the session's `model` fixture, at batch sizes 1 and 3
with a 16-token prompt bucket and a 256-slot cache: the shapes the Engine and chat tests use, so
most compilations are shared with them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from flaxchat.infer.benchmark import BenchmarkError, DecodeBenchConfig, _Runner, bench_decode
from flaxchat.infer.errors import GenerationError
from flaxchat.model.checkpoint import save_checkpoint

APP = Path(__file__).resolve().parents[3] / "apps" / "bench" / "__main__.py"


def bench_app():
    spec = importlib.util.spec_from_file_location("bench_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_bench_reports_every_mode_batch_and_peak(tmp_path, model, tokenizer, capsys):
    path = save_checkpoint(tmp_path / "tiny", model, tokenizer)
    flags = ["--model", str(path), "--draft-model", str(path), "--batch-sizes", "1,3", "--padded-max-batch", "3",
             "--context", "16", "--steps", "8", "--prefill-tokens", "16", "--spec-k", "3", "--bandwidth-mib", "16"]
    assert bench_app().main(["decode", *flags]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("memory bandwidth") for line in lines[:-1])  # the peak is printed beside the results
    assert report["bench"] == "decode" and report["model"] == str(path) and report["context"] == 16

    runs = {(e["mode"], e["batch_size"]) for e in report["decode"]}
    assert runs == {(mode, batch) for mode in ("cached", "fast", "padded") for batch in (1, 3)}
    bandwidth = report["memory_bandwidth_bytes_per_s"]
    assert 1e8 < bandwidth < 1e13 and report["matmul_peak_flops_per_s"] > 1e8
    # The tiny model (2 layers, width 32, 2 query heads and 1 kv head of 16, vocab 265 padded to 320):
    # per layer q, k, v, proj and the MLP; the head; the smear gate (24) and layer 1's VE gate (12 x 1).
    per_layer = 32 * 32 + 2 * 32 * 16 + 32 * 32 + 2 * 32 * 128
    assert report["weight_bytes"] == 4 * (2 * per_layer + 320 * 32 + 24 + 12)
    assert report["kv_read_bytes_per_row"] == 2 * 2 * 16 * 4 * 16  # layers x (k, v) x kv width x fp32 x context
    for e in report["decode"]:
        ms = e["ms_per_step"]
        assert ms > 0
        rounding = 0.0005 / ms  # ms_per_step is reported to 0.001 ms: over 1% of the tiny model's ~0.04 ms step
        assert e["tok_per_s"] == pytest.approx(e["batch_size"] * 1e3 / ms, rel=0.01 + rounding)
        step_bytes = report["weight_bytes"] + e["batch_size"] * report["kv_read_bytes_per_row"]
        assert e["mbu_percent"] == pytest.approx(100 * step_bytes / (ms / 1e3) / bandwidth, rel=0.02 + rounding, abs=0.1)
    assert report["prefill"]["tokens"] == 16 and report["prefill"]["tok_per_s"] > 0

    spec = report["speculative"]
    # The draft is the target itself: at temperature 0 every proposal is accepted.
    assert spec["k"] == 3 and spec["acceptance_rate"] == 1.0 and spec["tokens_per_round"] == 4
    # Three speculative runs, each paired with a cached run right after it; medians of the pairs.
    runs = spec["runs"]
    assert len(runs) == 3 and spec["rounds"] == 3 * (-(-8 // 4))  # 8 tokens at 4 per round, per run
    for r in runs:
        assert r["speedup"] == pytest.approx(r["tok_per_s"] / r["cached_tok_per_s"], rel=0.01)
    assert spec["speedup"] == sorted(r["speedup"] for r in runs)[1]
    assert spec["tok_per_s"] == sorted(r["tok_per_s"] for r in runs)[1]
    assert spec["cached_tok_per_s"] == sorted(r["cached_tok_per_s"] for r in runs)[1]


def test_a_text_prompt_sets_the_tokens_decoding_starts_from(tmp_path, model, tokenizer, capsys):
    path = save_checkpoint(tmp_path / "tiny", model, tokenizer)
    text = "the cat sat on the mat"
    flags = ["--model", str(path), "--prompt", text, "--batch-sizes", "1", "--padded-max-batch", "1", "--steps", "8",
             "--prefill-tokens", "16", "--no-speculative", "--bandwidth-mib", "16"]
    assert bench_app().main(["decode", *flags]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prompt = tokenizer.encode(text, prepend=tokenizer.bos_id)
    assert report["prompt_tokens"] == len(prompt) and report["context"] == len(prompt) + 4
    runner = _Runner(model, DecodeBenchConfig(batch_sizes=(1,), steps=8, prompt_ids=tuple(prompt)))
    assert runner.prompt[0, : len(prompt)].tolist() == prompt and runner.length.tolist() == [len(prompt)]


def test_a_text_prompt_needs_a_checkpoint_with_its_tokenizer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_app().main(["decode", "--prompt", "hello", "--depth", "1"])
    assert exit_info.value.code == 2 and "--prompt needs --model" in capsys.readouterr().err


def test_prompt_ids_outside_the_vocabulary_are_refused(model):
    cfg = DecodeBenchConfig(batch_sizes=(1,), steps=8, prompt_ids=(1, model.config.vocab_size))
    with pytest.raises(BenchmarkError, match="outside the model's vocabulary"):
        bench_decode(model, cfg, memory_bandwidth=1e10, matmul_peak=1e10)


def test_missing_checkpoint_is_an_error_not_a_traceback(tmp_path, capsys):
    assert bench_app().main(["decode", "--model", str(tmp_path / "nowhere")]) == 1
    assert "no model checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("settings, message", [
    (dict(batch_sizes=()), "batch sizes"),
    (dict(batch_sizes=(0,)), "batch sizes"),
    (dict(steps=1), "steps"),
    (dict(context=4, steps=16), "context"),
    (dict(prompt_ids=(3, -1)), "prompt ids"),
])
def test_bad_settings_say_what_to_change(settings, message):
    with pytest.raises(BenchmarkError, match=message):
        DecodeBenchConfig(**settings)


def test_bad_temperature_is_the_samplers_error():
    with pytest.raises(GenerationError, match="temperature"):
        DecodeBenchConfig(temperature=-1.0)
