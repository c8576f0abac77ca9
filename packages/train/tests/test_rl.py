"""RL (GRPO): the policy-gradient batch and loss touch sampled tokens only, normalized as nanochat; apps/rl
end to end on a tiny model with a learnable reward (the mean reward rises; the result loads by name)."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flaxchat.model import GPT, GPTConfig, cross_entropy
from flaxchat.model.checkpoint import load_checkpoint, models_dir, save_checkpoint
from flaxchat.model.params import assign_params, named_params
from flaxchat.tokenizer import Tokenizer
from flaxchat.tokenizer.spec import nanochat_spec
from flaxchat.train.finetune import FinetuneError
from flaxchat.train.rl import RLConfig
from flaxchat.train.rl_rollout import Rollout, policy_gradient_batch, rollout_seed

APP = Path(__file__).resolve().parents[3] / "apps" / "rl" / "__main__.py"
TOKENIZER = Tokenizer(nanochat_spec({bytes([i]): i for i in range(256)}))
S = TOKENIZER.encode_special
CONFIG = GPTConfig(sequence_len=64, vocab_size=TOKENIZER.vocab_size, n_layer=2, n_head=2, n_kv_head=2, n_embd=64,
                   window_pattern="L")
END = S("<|assistant_end|>")
P = [S("<|bos|>"), S("<|user_start|>"), ord("q"), S("<|user_end|>"), S("<|assistant_start|>")]  # the prompt
TOOL = [S("<|python_start|>"), ord("1"), ord("+"), ord("1"), S("<|python_end|>")]  # sampled
FORCED = [S("<|output_start|>"), ord("2"), S("<|output_end|>")]  # the Engine's tool output


def _rollouts() -> list[Rollout]:
    """Two questions x two samples; mask 0 on the prompt and the forced tool output, as the Engine returns."""
    a0 = P + [ord("a")] + TOOL + FORCED + [ord("b")]
    m0 = [0] * 5 + [1] + [1] * 5 + [0] * 3 + [1]
    a1, m1 = P + [ord("c")], [0] * 5 + [1]
    b0, b1 = P + [ord("d"), ord("e")], P + [ord("f")]
    return [Rollout([a0, a1], [m0, m1], np.float32([1.0, 0.0])),
            Rollout([b0, b1], [[0] * 5 + [1, 1], [0] * 5 + [1]], np.float32([1.0, 1.0]))]


def test_batch_weights_sampled_tokens_only_with_nanochat_normalization():
    batch = policy_gradient_batch(_rollouts(), rows=1, pad_id=END, bucket=16)
    assert batch.inputs.shape == batch.targets.shape == batch.weights.shape == (4, 1, 16)  # 15 positions -> 16
    a0 = P + [ord("a")] + TOOL + FORCED + [ord("b")]
    # Hand-written targets of a0: the prompt and the tool output are not targets; padding neither.
    sampled = [ord("a")] + TOOL
    expected = [-1] * 4 + sampled + [-1] * 3 + [ord("b")] + [-1] * 2
    assert batch.inputs[0, 0].tolist() == a0 + [END] and batch.targets[0, 0].tolist() == expected
    # Advantages r - mean: +0.5, -0.5 for question 1; 0, 0 for question 2. Each pass (one row here) is
    # normalized by its sampled targets, times 2 passes per question, times 2 questions.
    w = batch.weights[:, 0]
    np.testing.assert_allclose(w[0], np.where(np.array(expected) >= 0, 0.5 / (7 * 2 * 2), 0.0), rtol=1e-6)
    np.testing.assert_allclose(w[1], np.where(batch.targets[1, 0] >= 0, -0.5 / (1 * 2 * 2), 0.0), rtol=1e-6)
    assert (batch.targets[1, 0] >= 0).sum() == 1 and not w[2:].any()


def test_loss_gradient_reaches_sampled_tokens_only():
    """The loss the train step minimizes (the model's fused weighted loss) equals -sum(adv * logp) over the
    sampled targets / normalizer, a function of the logits whose gradient at prompt, tool-output and
    padding positions is exactly zero."""
    model = nnx.eval_shape(lambda: GPT(CONFIG.replace(sequence_len=16), rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    assign_params(model, {k: 0.3 * rng.standard_normal(v.shape) for k, v in named_params(model).items()})
    graphdef, params = nnx.split(model)
    batch = policy_gradient_batch(_rollouts(), rows=2, pad_id=END, bucket=16)
    x, y, w = (jnp.asarray(a[0]) for a in (batch.inputs, batch.targets, batch.weights))  # question 1's pass

    @jax.jit
    def losses(params):
        model = nnx.merge(graphdef, params)
        logits = model(x)
        reference = jax.value_and_grad(lambda z: jnp.sum(w * cross_entropy(z, y, "none")))
        return model.weighted_loss(x, y, w), logits, *reference(logits)

    loss, logits, ref_loss, dlogits = losses(params)

    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    by_hand = 0.0
    for row, advantage in ((0, 0.5), (1, -0.5)):
        for t in np.flatnonzero(batch.targets[0, row] >= 0):
            by_hand -= advantage * logp[row, t, batch.targets[0, row, t]]
    by_hand /= (7 + 1) * 1 * 2  # sampled targets in the pass (7 + 1), 1 pass per question, 2 questions
    np.testing.assert_allclose([float(loss), float(ref_loss)], [by_hand, by_hand], rtol=2e-4)

    touched = np.abs(np.asarray(dlogits)).sum(-1) > 0
    np.testing.assert_array_equal(touched, batch.targets[0] >= 0)


def test_seeds_and_config_checks():
    assert rollout_seed(3, 7, 1) == hash((3, 7, 1)) & 0x7FFFFFFF == rollout_seed(3, 7, 1)  # nanochat's, stable
    assert rollout_seed(3, 7, 1) != rollout_seed(3, 7, 0)
    with pytest.raises(FinetuneError, match="multiple of device_batch_size"):
        RLConfig("d4-sft", num_samples=12, device_batch_size=8)


class CapitalLetter:
    """A toy task with a learnable reward: 1 when the answer starts with a capital letter (about 1 in 10
    of the byte vocabulary at random init)."""

    def __init__(self, size: int, offset: int = 0):
        self.size, self.offset = size, offset

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return {"messages": [{"role": "user", "content": f"Say a capital letter ({self.offset + i})"},
                             {"role": "assistant", "content": "A"}]}

    def evaluate(self, conversation, completion):
        return completion[:1].isupper()

    def reward(self, conversation, completion):
        return float(self.evaluate(conversation, completion))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """apps/rl on a tiny random-init model and CapitalLetter: (base dir, exit code)."""
    base = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAXCHAT_BASE_DIR", str(base))
        graphdef, _ = nnx.split(nnx.eval_shape(lambda: GPT(CONFIG, rngs=nnx.Rngs(0))))
        model = nnx.merge(graphdef, jax.jit(lambda: nnx.split(GPT(CONFIG, rngs=nnx.Rngs(0)))[1])())  # one compile
        save_checkpoint(models_dir() / "tiny", model, TOKENIZER, {"kind": "sft"})
        spec = importlib.util.spec_from_file_location("flaxchat_rl_app", APP)
        app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(app)
        mp.setattr(app, "load_tasks", lambda args: (CapitalLetter(40), CapitalLetter(4, 100), "capital letters"))
        code = app.main(["--model", "tiny", "--num-steps", "20", "--examples-per-step", "2", "--num-samples", "8",
                         "--max-new-tokens", "2", "--init-lr-frac", "1.0", "--eval-every", "10", "--eval-examples", "4",
                         "--save-every", "10"])
        yield base, code


def test_mean_reward_rises(run):
    base, code = run
    assert code == 0
    records = [json.loads(line) for line in (base / "runs" / "tiny-rl" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in records if r["kind"] == "train"]
    assert len(rewards) == 20
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.4, rewards
    evals = {r["step"]: r["pass_at_k"] for r in records if r["kind"] == "eval"}
    assert sorted(evals) == [0, 10, 20] and all(len(v) == 8 for v in evals.values())
    assert evals[20][0] > evals[0][0]  # pass@1 on the held-out prompts
    assert all(np.all(np.diff(v) >= 0) for v in evals.values())  # pass@k grows with k


def test_result_loads_by_name_with_report(run):
    base, _ = run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLAXCHAT_BASE_DIR", str(base))
        model, tokenizer, meta = load_checkpoint("tiny-rl")
    assert meta["kind"] == "rl" and meta["source"] == "tiny" and meta["step"] == 19 and len(meta["pass_at_k"]) == 8
    run_dir = base / "runs" / "tiny-rl"
    assert {"report.md", "reward.png", "pass_at_k.png", "train_loss.png"} <= {p.name for p in run_dir.iterdir()}
    assert "pass@8" in (run_dir / "report.md").read_text()
