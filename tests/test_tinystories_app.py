"""apps/tinystories at its smallest setting: every stage runs, offline, and the report and artifacts exist."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "apps" / "tinystories"
STAGES = ("tokenizer", "pretrain", "sft", "eval", "chat", "export", "edge runner")


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    env = {**os.environ, "FLAXCHAT_BASE_DIR": str(tmp_path), "FLAXCHAT_OFFLINE": "1"}
    flags = ["--depth", "2", "--max-seq-len", "128", "--vocab-size", "512", "--steps", "6", "--sft-steps", "3",
             "--eval-tasks", "arithmetic", "--max-problems", "2", "--quantize", "none",
             "--pretrain-args", "--eval-every 3 --sample-every -1 --total-batch-size 1024 --device-batch-size 8",
             "--sft-args", "--eval-every 3 --device-batch-size 4"]
    result = subprocess.run([sys.executable, str(APP), *flags], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "runs" / "tinystories-pipeline" / "report.md").read_text()
    for stage in STAGES:
        assert f"| {stage} |" in report
    assert (tmp_path / "runs" / "tinystories-pipeline" / "stages.png").stat().st_size > 0
    for model in ("tinystories", "tinystories-sft"):
        assert (tmp_path / "models" / model / "meta.json").exists()
    assert (tmp_path / "runs" / "tinystories-sft" / "eval.json").exists()
    package = tmp_path / "exports" / "tinystories-sft.litert"
    assert (package / "model.tflite").stat().st_size > 0 and (package / "manifest.json").exists()
    # Both answers made it into the report (the stages print them; an empty answer would leave the block empty).
    chat, edge = report.split("## Chat sample (JAX Engine)")[1].split("## Edge runner (LiteRT, no jax)")
    assert chat.strip("`\n ") and edge.strip("`\n ")
    assert "Report:" in result.stdout and str(package) in result.stdout
