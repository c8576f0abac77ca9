"""The runtime's chunked feeding, the cache limit, sampling, chat prompts and text streaming."""

import numpy as np
import pytest
from flaxchat.export.errors import GenerationError
from flaxchat.export.generate import Sampling, TextStream, chat_prompt, generate, sample_token, stop_ids
from flaxchat.export.runtime import LiteRTModel


@pytest.fixture(scope="module")
def litert(exports):
    with LiteRTModel.load(exports["fp32"]) as model:
        yield model


def test_any_split_of_the_tokens_gives_the_same_logits(litert):
    tokens = np.random.default_rng(1).integers(0, 265, 50).tolist()
    litert.reset()
    whole = litert.forward(tokens)  # 32 + 8 + 8 + 2 decodes
    litert.reset()
    for chunk in (tokens[:3], tokens[3:20], tokens[20:49]):
        litert.forward(chunk)
    pieces = litert.forward(tokens[49:])
    assert litert.position == 50
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


def test_the_cache_limit_is_enforced(litert):
    litert.reset()
    litert.forward(list(range(250)))
    with pytest.raises(GenerationError, match="exceed the exported KV cache of 256"):
        litert.forward([1] * 7)
    litert.forward([1] * 6)  # exactly full is fine
    with pytest.raises(GenerationError, match=r"token ids must be in \[0, 265\)"):
        litert.forward([265])
    with pytest.raises(GenerationError, match="prompt .* exceeds the exported KV cache"):
        list(generate(litert, [1] * 200, 58))
    assert len(list(generate(litert, [1] * 200, 57))) == 57  # the last token needs no cache position


def test_sampling_is_seeded_and_top_k_1_is_greedy(litert, tokenizer):
    prompt = chat_prompt(tokenizer, "Tell me a story")
    greedy = list(generate(litert, prompt, 12, Sampling(temperature=0.0)))
    assert list(generate(litert, prompt, 12, Sampling(temperature=5.0, top_k=1, seed=3))) == greedy
    first, again, other = (list(generate(litert, prompt, 12, Sampling(temperature=1.5, seed=s))) for s in (0, 0, 1))
    assert first == again != other


def test_generation_ends_before_a_stop_token(litert, tokenizer):
    prompt = chat_prompt(tokenizer, "Tell me a story")
    greedy = list(generate(litert, prompt, 12, Sampling(temperature=0.0)))
    stops = frozenset({greedy[4]})
    assert list(generate(litert, prompt, 12, Sampling(temperature=0.0), stops)) == greedy[:greedy.index(greedy[4])]


def test_sample_token_follows_softmax_over_the_top_k():
    logits = np.log(np.asarray([0.1, 0.2, 0.3, 0.4, 1e-9], np.float32))
    rng = np.random.default_rng(0)
    n = 8000
    counts = np.bincount([sample_token(logits, Sampling(1.0, top_k=3), rng) for _ in range(n)], minlength=5)
    assert counts[0] == 0 and counts[4] == 0  # outside the top 3
    np.testing.assert_allclose(counts[1:4] / n, [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9], atol=0.02)
    # temperature 0.5 squares the probabilities (before normalizing)
    counts = np.bincount([sample_token(logits, Sampling(0.5), rng) for _ in range(n)], minlength=5)
    np.testing.assert_allclose(counts / n, np.asarray([1, 4, 9, 16, 0]) / 30, atol=0.02)
    assert sample_token(logits, Sampling(0.0), rng) == 3


def test_bad_requests(litert):
    for kwargs in ({"temperature": -1.0}, {"temperature": float("nan")}, {"top_k": -2}, {"seed": -1}):
        with pytest.raises(GenerationError):
            Sampling(**kwargs)
    with pytest.raises(GenerationError, match="prompt is empty"):
        list(generate(litert, [], 3))
    with pytest.raises(GenerationError, match="max_tokens"):
        list(generate(litert, [1], 0))


def test_chat_prompt_is_one_user_turn_with_the_assistant_primed(tokenizer):
    special = tokenizer.encode_special
    assert chat_prompt(tokenizer, "hi!") == [tokenizer.bos_id, special("<|user_start|>"), *tokenizer.encode("hi!"),
                                             special("<|user_end|>"), special("<|assistant_start|>")]
    assert stop_ids(tokenizer) == {special("<|assistant_end|>"), tokenizer.bos_id}
    with pytest.raises(GenerationError, match="empty"):
        chat_prompt(tokenizer, "  ")


def test_text_stream_waits_for_whole_utf8_characters(tokenizer):
    stream = TextStream(tokenizer)
    pieces = [stream.feed(token) for token in tokenizer.encode("aé€😀")]  # 1 + 2 + 3 + 4 bytes, one per token
    assert pieces == ["a", "", "é", "", "", "€", "", "", "", "😀"]
    assert stream.feed(tokenizer.encode("x")[0]) + stream.flush() == "x"
    broken = TextStream(tokenizer)
    assert broken.feed(0xE2) == "" and broken.flush() == "\ufffd"  # an unfinished character at the end
