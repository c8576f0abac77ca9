import math

import jax
import numpy as np
from flax import nnx

from flaxchat.evals.bpb import evaluate_bpb


def test_bpb_matches_a_direct_computation(tiny_gpt):
    model, vocab = tiny_gpt, tiny_gpt.config.vocab_size
    rng = np.random.default_rng(0)
    token_bytes = rng.integers(1, 5, vocab).astype(np.int32)
    token_bytes[[0, 7]] = 0  # two "special" tokens
    batches = []
    for _ in range(3):
        x = rng.integers(0, vocab, (2, 16)).astype(np.int32)
        y = rng.integers(0, vocab, (2, 16)).astype(np.int32)
        y[0, :3] = -1
        y[1, 5] = 0
        batches.append((x, y))
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))  # eager ops would compile one by one
    nats = total = 0.0
    for x, y in batches:
        logits = np.asarray(forward(state, x), np.float64)
        lse = np.log(np.exp(logits).sum(-1))
        for b in range(2):
            for t in range(16):
                if y[b, t] >= 0 and token_bytes[y[b, t]] > 0:
                    nats += lse[b, t] - logits[b, t, y[b, t]]
                    total += token_bytes[y[b, t]]
    expected = nats / (math.log(2) * total)
    assert abs(evaluate_bpb(model, iter(batches), 3, token_bytes) - expected) < 1e-5 * expected
    assert evaluate_bpb(model, iter(batches[:1]), 0, token_bytes) == float("inf")
