import math

import jax
import numpy as np
from flax import nnx

from flaxchat.evals.bpb import evaluate_bpb
from flaxchat.model import GPT, GPTConfig


def test_bpb_matches_a_direct_computation():
    cfg = GPTConfig(sequence_len=32, vocab_size=50, n_layer=2, n_head=2, n_kv_head=2, n_embd=32)
    model = GPT(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    token_bytes = rng.integers(1, 5, 50).astype(np.int32)
    token_bytes[[0, 7]] = 0  # two "special" tokens
    batches = []
    for _ in range(3):
        x = rng.integers(0, 50, (2, 16)).astype(np.int32)
        y = rng.integers(0, 50, (2, 16)).astype(np.int32)
        y[0, :3] = -1
        y[1, 5] = 0
        batches.append((x, y))
    nats = total = 0.0
    for x, y in batches:
        logits = np.asarray(model(jax.numpy.asarray(x)), np.float64)
        lse = np.log(np.exp(logits).sum(-1))
        for b in range(2):
            for t in range(16):
                if y[b, t] >= 0 and token_bytes[y[b, t]] > 0:
                    nats += lse[b, t] - logits[b, t, y[b, t]]
                    total += token_bytes[y[b, t]]
    expected = nats / (math.log(2) * total)
    assert abs(evaluate_bpb(model, iter(batches), 3, token_bytes) - expected) < 1e-5 * expected
    assert evaluate_bpb(model, iter(batches[:1]), 0, token_bytes) == float("inf")
