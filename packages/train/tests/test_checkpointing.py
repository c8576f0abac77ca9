import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxchat.train.checkpointing import TrainCheckpointError, TrainCheckpointer, abstract_like


def _state(seed):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32), "b": jnp.asarray(rng.standard_normal(3))}
    opt = (jnp.asarray(seed, jnp.int32), {"m": params["w"] * 2})
    return params, opt


def test_round_trip_keep_last_and_json_state(tmp_path):
    ckpt = TrainCheckpointer(tmp_path, keep=2)
    for step in (2, 4, 6):
        params, opt = _state(step)
        ckpt.save(step, params, opt, {"next_index": step * 10}, {"smooth_loss": step / 10})
    ckpt.wait()
    assert ckpt.all_steps() == [4, 6] and ckpt.latest_step() == 6
    params, opt = _state(0)
    p, o, data, loop = ckpt.restore(4, abstract_like(params), abstract_like(opt))
    expected_p, expected_o = _state(4)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves((p, o)), jax.tree.leaves((expected_p, expected_o))))
    assert jax.tree.structure(o) == jax.tree.structure(opt)
    assert data == {"next_index": 40} and loop == {"smooth_loss": 0.4}
    with pytest.raises(TrainCheckpointError, match="no checkpoint for step 3"):
        ckpt.restore(3, abstract_like(params), abstract_like(opt))
    ckpt.close()


def test_an_unfinished_save_is_never_restored(tmp_path):
    ckpt = TrainCheckpointer(tmp_path)
    params, opt = _state(1)
    ckpt.save(1, params, opt, {}, {})
    ckpt.wait()
    ckpt.close()
    # What a save killed midway leaves behind: Orbax's temporary directory, never renamed.
    (tmp_path / "2.orbax-checkpoint-tmp-123").mkdir()
    assert TrainCheckpointer(tmp_path).latest_step() == 1


def test_no_space_is_a_clear_error(tmp_path):
    ckpt = TrainCheckpointer(tmp_path, min_free_bytes=1 << 60)
    params, opt = _state(1)
    with pytest.raises(TrainCheckpointError, match="GiB free"):
        ckpt.save(1, params, opt, {}, {})
