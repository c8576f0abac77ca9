"""The subprocess side of test_sharding.py: the real training step on several device meshes.

The parent sets XLA_FLAGS (how many CPU devices this process simulates) and JAX_PLATFORMS before
this process starts, since jax reads them once, at import. For the two-process run it also sets
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which maybe_initialize_distributed
reads, exactly as a multi-host launch would.

    python sharding_worker.py single OUT   # 8 devices: 1-device, DP, DP x FSDP, FSDP runs; checkpoint moves
    python sharding_worker.py multi OUT    # one of two processes: DP=2 x FSDP=4 over both processes' devices

Results land in OUT/results.npz (arrays gathered to the host) and OUT/info.json (shardings,
compile counts, checkpoint facts); the test compares them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flaxchat.model import GPT, GPTConfig
from flaxchat.train import mesh as meshlib
from flaxchat.train.checkpointing import TrainCheckpointer, abstract_like
from flaxchat.train.optim import OptimizerConfig, build_optimizer, pretrain_schedules
from flaxchat.train.step import setup_training

# Three layers: with two, the backout layer is the last one, x - lambda * x goes straight into the
# final RMSNorm and backout_lambda's gradient is exactly zero, i.e. pure rounding noise.
CONFIG = GPTConfig(sequence_len=64, vocab_size=128, n_layer=3, n_head=4, n_kv_head=2, n_embd=64)
MICRO_STEPS, ROWS = 2, 8  # a global batch of 16 rows per optimizer step, as 2 accumulated micro-steps of 8
ITERATIONS = 10  # the schedules' horizon; the runs take 2 (3 after a restore) of them
MESHES = {"one": (1, 1), "dp8": (8, 1), "dp2_fsdp4": (2, 4), "fsdp8": (1, 8)}  # name: (dp, fsdp)
DATA_STATE = {"shard": 3, "row_group": 1, "offset": 17}
LOOP_STATE = {"smooth_loss": 4.25, "min_val_bpb": float("inf"), "train_time_s": 1.5}


@functools.cache
def initial_state():
    """The tiny GPT's (graphdef, host arrays), moved off its initialization by a fixed random perturbation.

    At init every c_proj is zero, so the blocks add nothing, the trunk is a multiple of x0 and the
    final RMSNorm makes the lambdas' gradients exactly zero. What remains is rounding noise, which
    AdamW (eps 1e-10) turns into updates of a sizeable fraction of the LR: two reduction orders
    would disagree there on any hardware. A generic starting point has no such degenerate parameters.
    """
    model = nnx.jit(lambda: GPT(CONFIG, rngs=nnx.Rngs(0)))()  # jitted: eager init is many tiny compiles
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(1)
    return graphdef, jax.tree.map(lambda x: np.asarray(x) + 0.02 * rng.standard_normal(x.shape, np.float32), state)


def global_rows() -> tuple[np.ndarray, np.ndarray]:
    """(micro_steps, rows, T) inputs and targets; the last 8 targets of every row are ignored."""
    rng = np.random.default_rng(2)
    inputs = rng.integers(0, CONFIG.vocab_size, (MICRO_STEPS, ROWS, CONFIG.sequence_len), dtype=np.int32)
    targets = rng.integers(0, CONFIG.vocab_size, (MICRO_STEPS, ROWS, CONFIG.sequence_len), dtype=np.int32)
    # Every row keeps as many targets, so nanochat's per-rank means (loss_groups = devices) equal the
    # global mean and runs on any number of devices optimize the same objective.
    targets[:, :, -8:] = -1
    return inputs, targets


def local_rows(array: np.ndarray) -> np.ndarray:
    """This process's contiguous share of every micro-step's rows, as a data loader would read it."""
    per_process = array.shape[1] // jax.process_count()
    start = jax.process_index() * per_process
    return array[:, start : start + per_process]


def fetch(tree, mesh) -> dict[str, np.ndarray]:
    """Global values of a pytree's arrays on this host, keyed by their pytree path."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if jax.process_count() == 1:
        return {jax.tree_util.keystr(path): np.asarray(x) for path, x in flat}
    # Other processes' shards are not here: replicate every array over the mesh, in one program.
    flat = jax.tree_util.tree_flatten_with_path(jax.jit(lambda t: t, out_shardings=meshlib.replicated(mesh))(tree))[0]
    return {jax.tree_util.keystr(path): np.asarray(x.addressable_data(0)) for path, x in flat}


def sharding_facts(x: jax.Array) -> dict:
    slices = {tuple((s.start, s.stop) for s in index) for index in x.sharding.devices_indices_map(x.shape).values()}
    return {
        "spec": str(x.sharding.spec),
        "shape": list(x.shape),
        "shard_shape": list(x.addressable_shards[0].data.shape),
        "devices": len(x.sharding.device_set),
        "distinct_slices": len(slices),  # over the whole mesh; 1: replicated
    }


class Run:
    """One mesh: the model placed by setup_training (what pretraining uses) and stepped on the fixed batch."""

    def __init__(self, mesh):
        self.mesh = mesh
        model = nnx.merge(*initial_state())
        tx = build_optimizer(nnx.state(model), CONFIG, OptimizerConfig(weight_decay=0.0),
                             pretrain_schedules(ITERATIONS, warmup_steps=0))
        self.setup = setup_training(model, tx, mesh)
        self.params, self.opt_state = self.setup.params, self.setup.opt_state
        inputs, targets = global_rows()
        self.inputs = meshlib.global_batch(local_rows(inputs), mesh, leading=1)
        self.targets = meshlib.global_batch(local_rows(targets), mesh, leading=1)
        self.steps = 0

    def step(self) -> np.ndarray:
        self.params, self.opt_state, losses = self.setup.step(
            self.params, self.opt_state, self.inputs, self.targets, jnp.float32(self.steps / ITERATIONS))
        self.steps += 1
        return fetch(losses, self.mesh)[""]

    def train(self, results: dict, tag: str) -> dict:
        """Two steps; records losses, parameters after each and the optimizer state after the first."""
        losses = []
        for k in (1, 2):
            losses.append(self.step())
            results |= {f"{tag}/step{k}/params{name}": v for name, v in fetch(self.params, self.mesh).items()}
            if k == 1:  # the first moments are (1 - beta) * gradient: the gradients, compared directly
                results |= {f"{tag}/step1/opt{name}": v for name, v in fetch(self.opt_state, self.mesh).items()}
        results[f"{tag}/losses"] = np.stack(losses)
        c_fc = self.params["blocks"][0]["mlp"]["c_fc"][...]
        momentum = self.opt_state.groups.inner_states["matrices"].inner_state.momentum["blocks"][0]["mlp"]["c_fc"][...]
        return {
            "c_fc": sharding_facts(c_fc),
            "c_fc_momentum": sharding_facts(momentum),
            "inputs": sharding_facts(self.inputs),
            "inputs_equal_global_batch": bool(np.array_equal(fetch(self.inputs, self.mesh)[""], global_rows()[0])),
            "compilations": self.setup.step._cache_size(),
        }


def restore_onto(checkpointer: TrainCheckpointer, step: int, like: Run, mesh):
    """Restore a checkpoint onto `mesh`, with the shardings setup_training would give there."""
    params, opt_state = like.params, like.opt_state
    return checkpointer.restore(
        step,
        abstract_like(params, meshlib.param_shardings(params, mesh)),
        abstract_like(opt_state, meshlib.state_shardings(opt_state, params, mesh)),
    )


def checkpoint_moves(runs: dict[str, Run], out: Path, results: dict) -> dict:
    """Save on one mesh, restore onto others: 8 -> 1, 8 -> 4 and 1 -> 4 devices; then train on."""
    source, single = runs["dp2_fsdp4"], runs["one"]
    saved = {}
    for tag, run in (("from8", source), ("from1", single)):
        ckpt = TrainCheckpointer(out / f"ckpt_{tag}")
        ckpt.save(run.steps, run.params, run.opt_state, DATA_STATE, LOOP_STATE)
        ckpt.wait()
        saved[tag] = ckpt
        results |= {f"ckpt/{tag}/saved{name}": v for name, v in fetch((run.params, run.opt_state), run.mesh).items()}
    four_dp = meshlib.make_mesh(2, 2, devices=jax.devices()[:4])
    four_fsdp = meshlib.make_mesh(1, 4, devices=jax.devices()[:4])
    info = {}
    for name, tag, mesh in (("8to1", "from8", single.mesh), ("8to4", "from8", four_dp), ("1to4", "from1", four_fsdp)):
        params, opt_state, data_state, loop_state = restore_onto(saved[tag], source.steps, source, mesh)
        state = (params, opt_state)
        results |= {f"ckpt/{name}/restored{k}": v for k, v in fetch(state, mesh).items()}
        expected = (meshlib.param_shardings(params, mesh), meshlib.state_shardings(opt_state, params, mesh))
        info[name] = {
            "devices": len(mesh.devices.flat),
            "shardings_match": all(a.sharding == s for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(expected))),
            "same_structure": jax.tree.structure(state) == jax.tree.structure((source.params, source.opt_state)),
            "c_fc": sharding_facts(params["blocks"][0]["mlp"]["c_fc"][...]),
            "data_state": data_state,
            "loop_state": loop_state,
        }
        if name == "8to1":  # train on from the restored state with the 1-device step already compiled
            single.params, single.opt_state = params, opt_state
    for tag, run in (("resumed_on_1", single), ("continued_on_8", source)):
        results[f"{tag}/losses"] = run.step()
        results |= {f"{tag}/step3/params{name}": v for name, v in fetch(run.params, run.mesh).items()}
        info[tag] = {"compilations": run.setup.step._cache_size()}
    for ckpt in saved.values():
        ckpt.close()
    return info


def data_state_round_trip(run: Run, out: Path) -> None:
    """Each process saves its own data state and must get exactly that one back (written per process)."""
    ckpt = TrainCheckpointer(out / "ckpt_processes")
    mine = {**DATA_STATE, "process": jax.process_index()}
    ckpt.save(run.steps, run.params, run.opt_state, mine, LOOP_STATE)
    ckpt.wait()
    _, _, restored, _ = restore_onto(ckpt, run.steps, run, run.mesh)
    ckpt.close()
    path = out / f"data_state_{jax.process_index()}.json"
    path.write_text(json.dumps(restored))


def write_results(out: Path, results: dict, info: dict) -> None:
    tmp = out / "results.tmp.npz"
    np.savez(tmp, **results)
    os.replace(tmp, out / "results.npz")
    tmp = out / "info.tmp.json"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, out / "info.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("single", "multi"))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    meshlib.maybe_initialize_distributed()
    results, info = {}, {"processes": jax.process_count(), "devices": jax.device_count(),
                         "local_devices": jax.local_device_count()}
    if args.mode == "single":
        runs = {}
        for tag, (dp, fsdp) in MESHES.items():
            runs[tag] = Run(meshlib.make_mesh(dp, fsdp, devices=jax.devices()[: dp * fsdp]))
            info[tag] = runs[tag].train(results, tag)
        info["checkpoints"] = checkpoint_moves(runs, args.out, results)
    else:
        run = Run(meshlib.make_mesh(*MESHES["dp2_fsdp4"]))
        info["two_processes"] = run.train(results, "two_processes")
        data_state_round_trip(run, args.out)
    if jax.process_index() == 0:
        write_results(args.out, results, info)


if __name__ == "__main__":
    main()
