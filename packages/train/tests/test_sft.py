"""SFT: settings inherited from the checkpoint, and apps/sft end to end on a tiny model (loss falls, the
result loads by name, the base run's optimizer state warm-starts the run)."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flaxchat.model import GPT, GPTConfig
from flaxchat.model.checkpoint import load_checkpoint, models_dir, save_checkpoint
from flaxchat.model.params import named_params
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec
from flaxchat.train import mesh as meshlib
from flaxchat.train.checkpointing import TrainCheckpointer
from flaxchat.train.finetune import FinetuneError
from flaxchat.train.optim import OptimizerConfig, build_optimizer, sft_schedules
from flaxchat.train.sft import SFTConfig, base_optimizer_state, make_plan
from flaxchat.train.sft_mixtures import SFTData
from flaxchat.train.step import setup_training

APP = Path(__file__).resolve().parents[3] / "apps" / "sft" / "__main__.py"
TOKENIZER = Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)}))
CONFIG = GPTConfig(sequence_len=64, vocab_size=TOKENIZER.vocab_size, n_layer=2, n_head=2, n_kv_head=2, n_embd=64,
                   window_pattern="L")
BASE_STEPS = 3  # the tiny "pretraining run" whose model and train state the test writes


def _spelling(word: str) -> dict:
    return {"messages": [{"role": "user", "content": f"spell {word}"}, {"role": "assistant", "content": "-".join(word)}]}


def _sum(a: int, b: int) -> dict:
    return {"messages": [{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": [
        {"type": "python", "text": f"{a}+{b}"}, {"type": "python_output", "text": str(a + b)},
        {"type": "text", "text": f"#### {a + b}"}]}]}


TRAIN = [_spelling(w) for w in ("cat", "dog", "bird", "fish", "cow", "horse", "pig", "ant")] + [_sum(2, 3), _sum(4, 4)]
VAL = TRAIN[:4]


def test_plan_inherits_from_the_checkpoint_as_nanochat():
    config = CONFIG.replace(sequence_len=256)
    plan = make_plan(SFTConfig("d8"), config, {"total_batch_size": 4096}, num_devices=1)
    # Pretraining records its total batch only: one micro-step of it; LRs: the pretraining defaults.
    assert (plan.max_seq_len, plan.device_batch_size, plan.total_batch_size, plan.grad_accum) == (256, 16, 4096, 1)
    assert (plan.embedding_lr, plan.unembedding_lr, plan.matrix_lr) == (0.3, 0.008, 0.02)
    plan = make_plan(SFTConfig("d8", device_batch_size=4, matrix_lr=0.01), config, {"total_batch_size": 4096},
                     num_devices=2)
    assert (plan.grad_accum, plan.matrix_lr) == (2, 0.01) and "matrix_lr" not in plan.inherited
    sft_meta = {"total_batch_size": 2048, "device_batch_size": 2, "max_seq_len": 128, "embedding_lr": 0.1}
    plan = make_plan(SFTConfig("d8-sft"), config, sft_meta, num_devices=1)  # an SFT checkpoint records everything
    assert (plan.max_seq_len, plan.device_batch_size, plan.grad_accum, plan.embedding_lr) == (128, 2, 8, 0.1)
    with pytest.raises(FinetuneError, match="not a multiple"):
        make_plan(SFTConfig("d8", total_batch_size=1000), config, {}, num_devices=1)


def _load_app():
    spec = importlib.util.spec_from_file_location("flaxchat_sft_app", APP)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


def _write_base_run(base: Path):
    """A tiny 'pretrained' model "tiny" and its run's train state, whose step counts mark it."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: GPT(CONFIG, rngs=nnx.Rngs(0))))
    model = nnx.merge(graphdef, jax.jit(lambda: nnx.split(GPT(CONFIG, rngs=nnx.Rngs(0)))[1])())  # one compile
    save_checkpoint(models_dir() / "tiny", model, TOKENIZER, {"kind": "base", "steps": BASE_STEPS,
                                                                "total_batch_size": 4 * CONFIG.sequence_len})
    tx = build_optimizer(nnx.state(model), CONFIG, OptimizerConfig(weight_decay=0.0), sft_schedules())
    setup = setup_training(model, tx, meshlib.make_mesh())
    marked = jax.tree.map(lambda x: jnp.full_like(x, BASE_STEPS) if x.dtype == jnp.int32 else x, setup.opt_state)
    checkpointer = TrainCheckpointer(base / "runs" / "tiny" / "checkpoints", async_save=False)
    checkpointer.save(BASE_STEPS, setup.params, marked, {}, {})
    checkpointer.close()
    return model, setup


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """apps/sft on the tiny model and the fixed conversations: (base dir, exit code, source model, setup)."""
    base = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAXCHAT_BASE_DIR", str(base))
        source, setup = _write_base_run(base)
        app = _load_app()
        mp.setattr(app, "load_data", lambda args: SFTData(TRAIN, VAL, "fixed test conversations"))
        # No --model: the newest base model ("tiny", the only one) is fine-tuned.
        code = app.main(["--num-iterations", "30", "--eval-every", "10", "--eval-tokens", "256"])
        yield base, code, source, setup


def _records(base: Path, kind: str) -> list[dict]:
    lines = (base / "runs" / "tiny-sft" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_base_optimizer_state_restarts_schedules_and_keeps_moments(run):
    base, _, _, setup = run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAXCHAT_BASE_DIR", str(base))
        state = base_optimizer_state("tiny", BASE_STEPS, setup)
        assert base_optimizer_state("tiny", BASE_STEPS + 1, setup) is None  # not this model's train state
    counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
    assert int(state.step) == 0 and len(counts) > 1 and all(int(c) == BASE_STEPS for c in counts[1:])


def test_sft_drives_the_loss_down(run):
    base, code, _, _ = run
    assert code == 0
    losses = [r["loss"] for r in _records(base, "train")]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.35 * np.mean(losses[:5]), losses
    bpb = {r["step"]: r["bpb"] for r in _records(base, "val")}
    assert sorted(bpb) == [0, 10, 20, 30] and bpb[30] < 0.5 * bpb[0]
    lrm = [r["lrm"] for r in _records(base, "train")]
    assert lrm[0] == pytest.approx(0.8) and lrm[-1] == pytest.approx(0.0)  # init_lr_frac 0.8, down to 0 at the end


def test_result_loads_by_name_with_report(run):
    base, _, source, _ = run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAXCHAT_BASE_DIR", str(base))
        model, tokenizer, meta = load_checkpoint("tiny-sft")
    assert meta["kind"] == "sft" and meta["source"] == "tiny" and meta["steps"] == 30 and meta["warm_optimizer"]
    assert meta["data"] == "fixed test conversations" and tokenizer.vocab_size == model.config.vocab_size
    before, after = named_params(source), named_params(model)
    assert not np.allclose(before["lm_head"], after["lm_head"])
    run_dir = base / "runs" / "tiny-sft"
    assert {"report.md", "train_loss.png", "val_bpb.png", "lr.png"} <= {p.name for p in run_dir.iterdir()}
    assert "fixed test conversations" in (run_dir / "report.md").read_text()


def test_bad_input_fails_clearly(run, capsys):
    base, _, _, _ = run
    app = _load_app()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAXCHAT_BASE_DIR", str(base))
        mp.setattr(app, "load_data", lambda args: pytest.fail("data loaded before the model was found"))
        assert app.main(["--model", "missing"]) == 1
    err = capsys.readouterr().err
    assert "no model checkpoint" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--mixture", "embedded", "--data", "x.jsonl"])
    assert exit_info.value.code == 2
