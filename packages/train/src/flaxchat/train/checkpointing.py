"""Train-state checkpoints with Orbax: parameters, optimizer state, data iterator state, loop state.

Saves are asynchronous (training goes on while the arrays are written) and atomic: Orbax writes
into a temporary directory and renames it when complete, so a save killed midway is never
restored. Restoring takes the target shardings from the caller, so a checkpoint written on one
mesh restores onto another (8 devices -> 1, 1 -> 4, ...). The data state is per process (each
host reads its own share of the data): the checkpoint holds every process's, and each process
restores its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class TrainCheckpointError(Exception):
    """A train-state checkpoint cannot be written or restored."""


def gather_process_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's JSON state, in process order (Orbax writes JSON from the primary process only)."""
    if jax.process_count() == 1:
        return [state]
    encoded = np.frombuffer(json.dumps(state).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.int32(encoded.size))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: encoded.size] = encoded
    gathered = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n])) for row, n in zip(gathered, lengths)]


def abstract_like(tree, shardings=None):
    """ShapeDtypeStructs of `tree`, with the given shardings (a matching pytree) or the arrays' own."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class TrainCheckpointer:
    """Keep-last-K Orbax checkpoints of a training run under `directory/<step>`."""

    def __init__(self, directory: str | Path, keep: int = 2, async_save: bool = True, min_free_bytes: int = 0):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.min_free_bytes = min_free_bytes
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, params, opt_state, data_state: dict[str, Any], loop_state: dict[str, Any]) -> None:
        free = shutil.disk_usage(self.directory).free
        if free < self.min_free_bytes:
            raise TrainCheckpointError(
                f"only {free / 2**30:.1f} GiB free under {self.directory}, a checkpoint needs about "
                f"{self.min_free_bytes / 2**30:.1f} GiB: free some space or point FLAXCHAT_BASE_DIR elsewhere"
            )
        self._manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                data_state=ocp.args.JsonSave({"processes": gather_process_states(data_state)}),
                loop_state=ocp.args.JsonSave(loop_state),
            ),
        )

    def restore(self, step: int, abstract_params, abstract_opt_state) -> tuple[Any, Any, dict, dict]:
        """(params, opt_state, data_state, loop_state), placed as the abstract trees' shardings say."""
        if step not in self._manager.all_steps():
            raise TrainCheckpointError(f"no checkpoint for step {step} under {self.directory} (have {self.all_steps()})")
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_params),
                    opt_state=ocp.args.StandardRestore(abstract_opt_state),
                    data_state=ocp.args.JsonRestore(),
                    loop_state=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise TrainCheckpointError(f"checkpoint {self.directory / str(step)} does not fit this run: {e}") from None
        opt_state = jax.tree.unflatten(jax.tree.structure(abstract_opt_state), jax.tree.leaves(restored.opt_state))
        processes = restored.data_state["processes"]
        if len(processes) != jax.process_count():
            raise TrainCheckpointError(
                f"checkpoint {self.directory / str(step)} was written by {len(processes)} processes, this run has "
                f"{jax.process_count()}: each process resumes its own share of the data, so resume with as many processes"
            )
        return restored.params, opt_state, processes[jax.process_index()], restored.loop_state

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
