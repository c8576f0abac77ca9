"""One training step, many device layouts: 1 device, DP=8, DP=2 x FSDP=4, FSDP=8, and two processes.

Every multi-device case runs in a subprocess (sharding_worker.py) that simulates CPU devices
with XLA_FLAGS, which jax reads once, at import. All of them start together, since each mostly
waits on the compiler; the tests then compare what they wrote.

Tolerances; in brackets what three perturbation seeds gave. The runs differ only in fp32 reduction order.
- Losses: rtol 1e-5 [<= 2e-7].
- Gradients, as the optimizer state after one step (first moments are (1 - beta) * gradient, so
  scale errors show, which the normalized updates would hide): 1e-3 in relative Frobenius norm per
  leaf [bulk <= 2e-5; up to 1.2e-4 for backout_lambda's Adam nu: a scalar summed over every token
  with much cancellation, then squared].
- Parameters after steps 1 and 2: 1e-4 in relative Frobenius norm per parameter [<= 2.3e-5].
  Not elementwise: the optimizer amplifies rounding where it is ill-conditioned (AdamW's eps is
  1e-10, so an element whose gradient is about that small takes a noise-driven step; Polar Express
  magnifies a matrix's smallest singular directions ~1000x), and a handful of the 160k elements
  (0-1 after step 1, 5-12 after step 2) fall outside rtol 1e-4 / atol 1e-6, by up to 7e-4.
The runs use weight_decay 0 (nanochat's SFT setting). Cautious weight decay masks elements by the
sign of update * weight, a step function: an element whose update is within rounding of zero flips
(observed: one weight on DP=8 moved by lr * wd * |w| = 1e-3), and Muon spreads that over the whole
matrix at the next step. The mask is elementwise, so nothing mesh-dependent is lost.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Under pytest-xdist `--dist loadgroup` keeps these tests (and the runs they share) on one worker.
pytestmark = pytest.mark.xdist_group("sharding")

WORKER = Path(__file__).with_name("sharding_worker.py")
TIMEOUT_S = 600
# Compiling dominates these runs, mostly XLA's CPU code generation: these flags make it 3-4x faster.
# Every run uses them, so the comparisons stay like for like.
FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_use_fusion_emitters=false")
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-3  # relative Frobenius norm per optimizer-state leaf, after the first step
PARAM_RTOL = 1e-4  # relative Frobenius norm per parameter


def _env(devices: int, **extra: str) -> dict[str, str]:
    # A clean slate: no inherited JAX_* settings (a coordinator address would make a run join it).
    dropped = ("XLA_FLAGS", "FLAXCHAT_DISTRIBUTED")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k not in dropped}
    env |= {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
    return env | extra


def _launch(base: Path, mode: str, name: str, devices: int, **env: str) -> tuple[subprocess.Popen, Path]:
    """Start a worker writing into base/mode, its output into base/name.log."""
    (base / mode).mkdir(exist_ok=True)
    log = base / f"{name}.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, str(WORKER), mode, str(base / mode)], env=_env(devices, **env),
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Outcome:
    """What one worker invocation left: its arrays and facts, or the tail of its log."""

    results: dict[str, np.ndarray] | None
    info: dict | None
    error: str | None
    out: Path

    @classmethod
    def wait(cls, out: Path, jobs: list[tuple[subprocess.Popen, Path]]) -> Outcome:
        codes = []
        for proc, _ in jobs:
            try:
                codes.append(proc.wait(timeout=TIMEOUT_S))
            except subprocess.TimeoutExpired:
                codes.append(f"timed out after {TIMEOUT_S} s")
        if all(code == 0 for code in codes) and (out / "info.json").exists():
            with np.load(out / "results.npz") as data:
                results = dict(data)
            return cls(results, json.loads((out / "info.json").read_text()), None, out)
        tails = "\n".join(f"--- {log.name} (exit {code}) ---\n{log.read_text()[-3000:]}"
                          for (_, log), code in zip(jobs, codes))
        return cls(None, None, tails, out)

    def require(self) -> Outcome:
        if self.error is not None:
            pytest.fail(f"the sharding worker failed:\n{self.error}", pytrace=False)
        return self


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("sharding")
    coordinator = f"127.0.0.1:{_free_port()}"
    jobs = {
        "single": [_launch(base, "single", "single", 8)],
        "multi": [_launch(base, "multi", f"multi{i}", 4, JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES="2",
                          JAX_PROCESS_ID=str(i)) for i in range(2)],
    }
    try:
        return {mode: Outcome.wait(base / mode, procs) for mode, procs in jobs.items()}
    finally:
        for proc, _ in (job for procs in jobs.values() for job in procs):
            if proc.poll() is None:  # timed out, or waiting for a peer that died
                proc.kill()
                proc.wait()


def _tree(results: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    tree = {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
    assert tree, f"no results under {prefix}"
    return tree


def _relative_norm_error(expected: np.ndarray, actual: np.ndarray) -> float:
    scale = np.linalg.norm(expected)
    return float(np.linalg.norm(actual - expected) / scale) if scale else float(np.linalg.norm(actual))


def _assert_norm_close(expected: dict, actual: dict, rtol: float, what: str) -> None:
    assert expected.keys() == actual.keys()
    error, name = max((_relative_norm_error(expected[k], actual[k]), k) for k in expected)
    assert error <= rtol, f"{what}: {name} differs by {error:.2e} (relative Frobenius norm) > {rtol}"


def assert_same_training(reference: dict, results: dict, ref: str, tag: str) -> None:
    """Run `tag` took the same two steps as run `ref`, up to fp32 reduction order."""
    np.testing.assert_allclose(results[f"{tag}/losses"], reference[f"{ref}/losses"], rtol=LOSS_RTOL,
                               err_msg=f"losses (step x micro-step) of {tag} vs {ref}")
    # Adam's mu and Muon's momentum after one step are (1 - beta) * gradient: the gradients themselves,
    # including their scale, which the normalized updates would hide.
    _assert_norm_close(_tree(reference, f"{ref}/step1/opt"), _tree(results, f"{tag}/step1/opt"), GRAD_RTOL,
                       f"optimizer state after step 1 of {tag} vs {ref}")
    for k in (1, 2):
        _assert_norm_close(_tree(reference, f"{ref}/step{k}/params"), _tree(results, f"{tag}/step{k}/params"),
                           PARAM_RTOL, f"parameters after step {k} of {tag} vs {ref}")


@pytest.mark.parametrize("mesh", ["dp8", "dp2_fsdp4", "fsdp8"])
def test_sharded_training_step_matches_one_device(runs, mesh):
    single = runs["single"].require()
    assert single.info["devices"] == 8 and single.info["processes"] == 1
    assert_same_training(single.results, single.results, "one", mesh)
    assert single.info[mesh]["inputs_equal_global_batch"]
    assert single.info[mesh]["compilations"] == 1  # the step's outputs fit its inputs: no recompilation


def test_fsdp_shards_parameters_and_optimizer_state_while_dp_replicates(runs):
    info = runs["single"].require().info
    c_fc = (64, 256)
    # (spec, per-device shard, different slices over the mesh) of a c_fc kernel and of its Muon momentum.
    expected = {
        "one": ("P(None, None)", c_fc, 1),
        "dp8": ("P(None, None)", c_fc, 1),
        "dp2_fsdp4": ("P('fsdp', None)", (16, 256), 4),
        "fsdp8": ("P('fsdp', None)", (8, 256), 8),
    }
    for mesh, (spec, shard, slices) in expected.items():
        for array in ("c_fc", "c_fc_momentum"):
            facts = info[mesh][array]
            got = (facts["spec"], tuple(facts["shard_shape"]), facts["distinct_slices"])
            assert got == (spec, shard, slices), (mesh, array)
            assert facts["devices"] == (1 if mesh == "one" else 8)
        # Every device gets its own rows of every micro-step: (2, 8, 64) -> (2, 1, 64) on 8 devices.
        rows = info[mesh]["inputs"]
        assert tuple(rows["shard_shape"]) == ((2, 8, 64) if mesh == "one" else (2, 1, 64))


@pytest.mark.parametrize("move, source, devices, spec, shard", [
    ("8to1", "from8", 1, "P(None, None)", (64, 256)),
    ("8to4", "from8", 4, "P('fsdp', None)", (32, 256)),  # DP=2 x FSDP=2
    ("1to4", "from1", 4, "P('fsdp', None)", (16, 256)),  # DP=1 x FSDP=4
])
def test_checkpoint_restores_onto_another_mesh(runs, move, source, devices, spec, shard):
    single = runs["single"].require()
    saved, restored = _tree(single.results, f"ckpt/{source}/saved"), _tree(single.results, f"ckpt/{move}/restored")
    assert saved.keys() == restored.keys()
    for name in saved:
        np.testing.assert_array_equal(restored[name], saved[name], err_msg=name)
    facts = single.info["checkpoints"][move]
    assert facts["devices"] == devices and facts["shardings_match"] and facts["same_structure"]
    assert (facts["c_fc"]["spec"], tuple(facts["c_fc"]["shard_shape"])) == (spec, shard)
    assert facts["data_state"] == {"shard": 3, "row_group": 1, "offset": 17}
    assert facts["loop_state"] == {"smooth_loss": 4.25, "min_val_bpb": float("inf"), "train_time_s": 1.5}


def test_training_resumed_on_one_device_continues_the_eight_device_run(runs):
    single = runs["single"].require()
    np.testing.assert_allclose(single.results["resumed_on_1/losses"], single.results["continued_on_8/losses"],
                               rtol=LOSS_RTOL)
    _assert_norm_close(_tree(single.results, "continued_on_8/step3/params"),
                       _tree(single.results, "resumed_on_1/step3/params"), PARAM_RTOL, "parameters after step 3")
    # The restored state has exactly the shardings the 1-device step was compiled for.
    assert single.info["checkpoints"]["resumed_on_1"]["compilations"] == 1


def test_two_processes_with_jax_distributed_match_one_process(runs):
    single, multi = runs["single"].require(), runs["multi"].require()
    info = multi.info
    assert (info["processes"], info["devices"], info["local_devices"]) == (2, 8, 4)
    two = info["two_processes"]
    # Each process fed only its half of the rows; the global batch is still the whole batch.
    assert two["inputs_equal_global_batch"]
    assert (two["c_fc"]["spec"], tuple(two["c_fc"]["shard_shape"])) == ("P('fsdp', None)", (16, 256))
    assert two["compilations"] == 1
    for ref in ("one", "dp2_fsdp4"):
        assert_same_training(single.results, multi.results, ref, "two_processes")
    # Each process restored its own data state from the shared checkpoint.
    for process in (0, 1):
        restored = json.loads((multi.out / f"data_state_{process}.json").read_text())
        assert restored == {"shard": 3, "row_group": 1, "offset": 17, "process": process}
