"""The exported .tflite against JAX: logits per call, greedy output against the Engine, int8 agreement."""

import numpy as np
import pytest
from flaxchat.export.convert import ExportSettings, convert
from flaxchat.export.errors import ExportError
from flaxchat.export.generate import Sampling, generate
from flaxchat.export.package import MODEL_FILE
from flaxchat.export.runtime import LiteRTModel
from flaxchat.infer.engine import Engine

GREEDY_TOKENS = 64
REFERENCE_TOKENS = 100
# Teacher-forced top-1 agreement with fp32 JAX over the 64-token greedy continuation. Measured on this
# random tiny model: int8 (dynamic range) 0.953, int8-weight-only 0.984; the bounds leave a margin.
AGREEMENT_BOUNDS = {"fp32": 1.0, "int8-weight-only": 0.9, "int8": 0.85}


@pytest.fixture(scope="module")
def reference(model, tokenizer, jax_stepper):
    """JAX fp32 greedy from a prompt: (prompt, continuation, logits before each continuation token and after the
    last one)."""
    prompt = tokenizer.encode("The quick brown fox jumps over the lazy dog, again and again!", prepend=tokenizer.bos_id)
    stepper = jax_stepper(model, 256)
    logits, continuation = [stepper.forward(prompt)], []
    for _ in range(REFERENCE_TOKENS):  # to position ~160: past the first layer's 128-token window
        continuation.append(int(np.argmax(logits[-1])))
        logits.append(stepper.forward(continuation[-1:]))
    return prompt, continuation, logits


def _teacher_forced(package, prompt, continuation) -> list[np.ndarray]:
    """The exported model's logits after the prompt and after each continuation token."""
    with LiteRTModel.load(package) as litert:
        return [litert.forward(prompt)] + [litert.forward([token]) for token in continuation]


def test_fp32_logits_match_jax_on_prefill_and_every_decode_step(exports, reference):
    prompt, continuation, expected = reference
    assert len(prompt) % 8 and len(prompt) > 40  # chunks of 32 and 8, then single decodes: every signature
    got = _teacher_forced(exports["fp32"], prompt, continuation)
    diffs = [np.abs(a - b).max() for a, b in zip(got, expected, strict=True)]
    assert np.abs(expected[-1]).max() > 1.0  # the comparison is not between near-zero logits
    assert max(diffs) < 1e-4, f"worst at step {int(np.argmax(diffs))}: {max(diffs):.2e}"


def test_greedy_64_tokens_equal_the_engines(exports, model, tokenizer, reference):
    prompt, continuation, _ = reference
    engine = [column[0] for column, _ in Engine(model, tokenizer).generate(prompt, max_tokens=GREEDY_TOKENS,
                                                                             temperature=0.0)]
    assert engine == continuation[:GREEDY_TOKENS]  # no stop token came up: all 64 are compared
    with LiteRTModel.load(exports["fp32"]) as litert:
        assert list(generate(litert, prompt, GREEDY_TOKENS, Sampling(temperature=0.0))) == engine


@pytest.mark.parametrize("quantization", sorted(AGREEMENT_BOUNDS))
def test_greedy_agreement_with_fp32_jax(exports, reference, quantization):
    prompt, continuation, expected = reference
    got = _teacher_forced(exports[quantization], prompt, continuation[:GREEDY_TOKENS - 1])
    agreement = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(got, expected[:GREEDY_TOKENS], strict=True)])
    assert agreement >= AGREEMENT_BOUNDS[quantization], f"{quantization}: top-1 agreement {agreement:.3f}"


def test_int8_files_are_smaller(exports):
    sizes = {q: (path / MODEL_FILE).stat().st_size for q, path in exports.items()}
    assert sizes["int8"] < 0.8 * sizes["fp32"] and sizes["int8-weight-only"] < 0.8 * sizes["fp32"]


def test_bad_settings_are_refused(model):
    for kwargs in ({"quantization": "int4"}, {"max_len": 1}, {"prefill_lengths": (1, 8)}, {"prefill_lengths": ()}):
        with pytest.raises(ExportError):
            ExportSettings(**kwargs)
    with pytest.raises(ExportError, match="exceeds the KV cache"):
        convert(model, ExportSettings(max_len=16, prefill_lengths=(32,)))
