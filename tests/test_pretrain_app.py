"""apps/pretrain end to end: a run, its report and model checkpoint, exact resume after kill -9, and CORE
during training (--core-metric-every)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

APP = Path(__file__).resolve().parents[1] / "apps" / "pretrain"
TINY = ["--depth", "2", "--head-dim", "32", "--max-seq-len", "64", "--device-batch-size", "4",
        "--total-batch-size", "512", "--eval-every", "4", "--eval-tokens", "512", "--sample-every", "-1",
        "--warmup-steps", "2"]


def _env(base: Path) -> dict:
    return {**os.environ, "FLAXCHAT_BASE_DIR": str(base), "JAX_PLATFORMS": "cpu"}


def _run(base: Path, *flags: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(APP), *flags], env=_env(base), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _losses(base: Path, run: str) -> dict[int, float]:
    lines = (base / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"}


def _weights(base: Path, run: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(base / "models" / run / "model.safetensors"))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A base dir with the default tokenizer already trained (shared by the runs below)."""
    return tmp_path_factory.mktemp("base")


def test_straight_run_writes_report_and_loadable_model(base):
    result = _run(base, *TINY, "--num-iterations", "8", "--save-every", "4", "--run", "straight")
    assert "final_val_bpb" in result.stdout
    run_dir = base / "runs" / "straight"
    assert {"report.md", "train_loss.png", "val_bpb.png", "lr.png", "metrics.jsonl"} <= {p.name for p in run_dir.iterdir()}
    losses = _losses(base, "straight")
    assert sorted(losses) == list(range(8)) and losses[7] < losses[0]
    from flaxchat.model.checkpoint import load_checkpoint

    model, tokenizer, meta = load_checkpoint(base / "models" / "straight")
    assert meta["steps"] == 8 and model.config.n_layer == 2 and tokenizer.vocab_size == model.config.vocab_size


def test_resume_after_kill_is_bitwise_identical(base):
    straight = _losses(base, "straight")
    flags = [*TINY, "--num-iterations", "8", "--save-every", "4", "--run", "killed"]
    proc = subprocess.Popen([sys.executable, str(APP), *flags], env=_env(base),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = base / "runs" / "killed" / "checkpoints" / "4"
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "the run never wrote its step-4 checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _run(base, *flags, "--resume")
    resumed = _losses(base, "killed")
    assert sorted(resumed) == list(range(8))
    assert [resumed[s] for s in range(4, 8)] == [straight[s] for s in range(4, 8)]  # bitwise
    a, b = _weights(base, "straight"), _weights(base, "killed")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_bad_flags_fail_clearly(base):
    result = subprocess.run([sys.executable, str(APP), *TINY, "--total-batch-size", "300"], env=_env(base),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "not a multiple" in result.stderr
    result = subprocess.run([sys.executable, str(APP), *TINY, "--run", "nothing", "--resume"], env=_env(base),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no checkpoint" in result.stderr
    result = subprocess.run([sys.executable, str(APP), "--data", str(base / "missing.txt")], env=_env(base),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "missing.txt" in result.stderr and "Traceback" not in result.stderr


def _tiny_core_bundle(root: Path) -> Path:
    """A one-task bundle in the DCLM layout: real CORE label and format, hand-written items."""
    items = [{"query": f"Is {a} plus {b} even?", "choices": ["yes", "no"], "gold": (a + b) % 2} for a, b in
             [(1, 2), (2, 2), (3, 4), (5, 5), (6, 1), (8, 2)]]
    (root / "eval_data" / "reading_comprehension").mkdir(parents=True)
    (root / "eval_data" / "reading_comprehension" / "boolq.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (root / "core.yaml").write_text("icl_tasks:\n- label: boolq\n  dataset_uri: reading_comprehension/boolq.jsonl\n"
                                    "  num_fewshot: [2]\n  icl_task_type: multiple_choice\n"
                                    "  continuation_delimiter: \"\\nAnswer: \"\n")
    (root / "eval_meta_data.csv").write_text("Eval Task,Random baseline\nboolq,62\n")
    return root


def test_core_metric_every_records_core_at_those_steps_and_the_end(base):
    bundle = _tiny_core_bundle(base.parent / "core_bundle")
    result = _run(base, *TINY, "--num-iterations", "6", "--run", "core", "--core-metric-every", "4",
                  "--core-bundle", str(bundle), "--core-metric-max-per-task", "5")
    assert "1/22 CORE tasks" in result.stdout and "core_metric" in result.stdout
    records = [json.loads(line) for line in (base / "runs" / "core" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "model_eval"]
    assert [r["step"] for r in evals] == [4, 6]  # every 4 steps (not step 0) and the last step
    # 5 items of a 62%-baseline task: the centered score is one of (k/5 - 0.62) / 0.38.
    assert all(any(abs(r["core_metric"] - (k / 5 - 0.62) / 0.38) < 1e-9 for k in range(6)) for r in evals)
    assert all(r["core_tasks"] == "1/22" for r in evals)
    report = (base / "runs" / "core" / "report.md").read_text()
    assert "| core_metric |" in report and "## Evaluations during training" in report
    from flaxchat.model.checkpoint import read_meta

    assert read_meta(base / "models" / "core")["metadata"]["core_metric"] == evals[-1]["core_metric"]


def test_core_metric_without_a_bundle_fails_before_training(base):
    for bundle_flags in (["--core-bundle", str(base / "no_bundle_here")], []):  # a wrong path; the default, offline
        run = f"nocore{len(bundle_flags)}"
        result = subprocess.run([sys.executable, str(APP), *TINY, "--run", run, "--core-metric-every", "2", *bundle_flags],
                                env={**_env(base), "FLAXCHAT_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "needs a CORE bundle" in result.stderr and "--core-bundle bigbench" in result.stderr
        assert "eval_bundle" in result.stderr
        assert not (base / "runs" / run).exists()  # nothing was trained
