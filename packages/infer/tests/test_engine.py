"""Engine: the four modes agree, sampling is seeded, rows stop as nanochat's, requests are validated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flaxchat.infer.engine import Engine, EngineConfig
from flaxchat.infer.errors import GenerationError

N = 3  # num_samples: one batch size across the tests keeps compilations shared
A, B = ord("a"), ord("b")


def columns(stream):
    return [(list(column), list(mask)) for column, mask in stream]


def tokens_of(stream):
    return [column for column, _ in columns(stream)]


def generate(engine, mode, prompt, **kw):
    """Any mode; speculative drafts with the target itself."""
    if mode == "speculative":
        kw["draft_model"] = engine.model
    return getattr(engine, f"generate_{mode}")(prompt, **kw)


def reference_greedy(model, prompt, steps):
    """Greedy decoding with the model's own full forward (no cache), written independently of the Engine."""
    width = 64
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, idx: nnx.merge(graphdef, state)(idx))
    seq = list(prompt)
    for _ in range(steps):
        idx = jnp.asarray([seq + [0] * (width - len(seq))])
        seq.append(int(jnp.argmax(forward(state, idx)[0, len(seq) - 1])))
    return seq[len(prompt) :]


def test_greedy_equals_the_models_own_forward(engine, model, tokenizer):
    prompt = tokenizer.encode("hello", prepend=tokenizer.bos_id)
    expected = reference_greedy(model, prompt, 12)
    got = tokens_of(engine.generate(prompt, num_samples=N, max_tokens=12, temperature=0.0))
    assert [column[0] for column in got] == expected[: len(got)]
    stops = {tokenizer.encode_special("<|assistant_end|>"), tokenizer.bos_id}
    assert len(got) == 12 or got[-1][0] in stops  # a shorter stream ended on a stop token


def test_all_modes_give_identical_greedy_output(engine, draft, tokenizer):
    bos = tokenizer.bos_id
    kw = dict(num_samples=N, max_tokens=14, temperature=0.0)
    for prompt in ([bos], tokenizer.encode("hello", prepend=bos), tokenizer.encode("fifteen chars!!", prepend=bos)):
        cached = columns(engine.generate_cached(prompt, **kw))
        assert all(len(set(column)) == 1 for column, _ in cached)  # greedy rows agree
        assert columns(engine.generate_padded(prompt, **kw)) == cached
        assert columns(engine.generate_fast(prompt, **kw)) == cached
        assert columns(engine.generate_speculative(prompt, draft, k=3, **kw)) == cached
    # 18 tokens: the next prefill bucket.
    prompt = tokenizer.encode("seventeen chars!!", prepend=bos)
    assert columns(engine.generate_cached(prompt, **kw)) == columns(engine.generate_padded(prompt, **kw))


def test_sampling_is_seeded(engine, tokenizer):
    prompt = tokenizer.encode("hi", prepend=tokenizer.bos_id)
    kw = dict(num_samples=N, max_tokens=12, temperature=1.0)
    first = tokens_of(engine.generate(prompt, seed=1, **kw))
    assert tokens_of(engine.generate(prompt, seed=1, **kw)) == first
    assert tokens_of(engine.generate(prompt, seed=2, **kw)) != first
    assert len(set(zip(*first))) > 1  # rows draw independently from the shared prefill


def test_cached_padded_and_fast_draw_the_same_tokens(engine, tokenizer):
    """The modes share the sampler and its key schedule, so equal logits give equal draws."""
    prompt = tokenizer.encode("abc", prepend=tokenizer.bos_id)
    kw = dict(num_samples=N, max_tokens=12, temperature=0.9, top_k=20, top_p=0.9, seed=7)
    cached = columns(engine.generate_cached(prompt, **kw))
    assert columns(engine.generate_padded(prompt, **kw)) == cached
    assert columns(engine.generate_fast(prompt, **kw)) == cached


def test_top_k_1_is_greedy(engine, tokenizer):
    prompt = tokenizer.encode("xyz", prepend=tokenizer.bos_id)
    greedy = tokens_of(engine.generate(prompt, num_samples=N, max_tokens=10, temperature=0.0))
    assert tokens_of(engine.generate(prompt, num_samples=N, max_tokens=10, temperature=1.0, top_k=1, seed=5)) == greedy


def test_weights_are_read_per_request(make_model, tokenizer):
    """In-place weight updates (as in RL) are seen by the next request without a new Engine."""
    model = make_model(0)
    engine = Engine(model, tokenizer)
    prompt = tokenizer.encode("hello", prepend=tokenizer.bos_id)
    kw = dict(num_samples=N, max_tokens=8, temperature=0.0)
    before = tokens_of(engine.generate(prompt, **kw))
    nnx.update(model, nnx.state(make_model(5)))
    after = tokens_of(engine.generate(prompt, **kw))
    assert after != before
    assert after == tokens_of(Engine(model, tokenizer).generate(prompt, **kw))


@pytest.mark.parametrize("mode", ["cached", "padded", "fast", "speculative"])
def test_max_tokens_is_respected(mode, tokenizer, make_scripted):
    prompt = tokenizer.encode("go", prepend=tokenizer.bos_id)
    engine = Engine(make_scripted(len(prompt), [A]), tokenizer)  # never stops
    assert tokens_of(generate(engine, mode, prompt, num_samples=N, max_tokens=7)) == [[A] * N] * 7


def test_max_tokens_none_fills_the_context(tokenizer, make_scripted):
    """As nanochat: without max_tokens, generate until the model's sequence_len (128) is full."""
    prompt = tokenizer.encode("go", prepend=tokenizer.bos_id)
    engine = Engine(make_scripted(len(prompt), [A]), tokenizer)
    assert len(tokens_of(engine.generate(prompt, num_samples=N, max_tokens=None))) == 128 - len(prompt)


@pytest.mark.parametrize("mode", ["cached", "padded", "fast", "speculative"])
@pytest.mark.parametrize("stop", ["<|assistant_end|>", "<|bos|>"])
def test_rows_stop_on_stop_tokens_and_are_fed_until_all_stop(mode, stop, tokenizer, make_scripted):
    prompt = tokenizer.encode("go", prepend=tokenizer.bos_id)
    stop_id = tokenizer.encode_special(stop)
    engine = Engine(make_scripted(len(prompt), [{A, stop_id}] * 40 + [stop_id]), tokenizer)
    for seed in range(10):  # a seed where rows finish at different steps
        kw = dict(num_samples=N, max_tokens=60, temperature=1.0, seed=seed)
        stream = columns(generate(engine, mode, prompt, **kw))
        first_stop = [next(i for i, (column, _) in enumerate(stream) if column[row] == stop_id) for row in range(N)]
        if len(set(first_stop)) > 1:
            break
    else:
        pytest.fail("rows finished together for every seed in 0..9")
    assert len(stream) == max(first_stop) + 1  # the stream ends when the last row does
    for row, end in enumerate(first_stop):
        assert all(column[row] == A for column, _ in stream[:end])
        assert all(column[row] in (A, stop_id) for column, _ in stream[end:])  # completed rows keep decoding
    assert all(mask == [1] * N for _, mask in stream)

    if mode == "speculative":
        kw["draft_model"] = engine.model
    sequences, masks = engine.generate_batch(prompt, mode=mode, **kw)
    for row, end in enumerate(first_stop):
        assert sequences[row] == prompt + [A] * end  # cut before (and without) the stop token
        assert masks[row] == [0] * len(prompt) + [1] * end


def test_generate_batch_without_stop_keeps_max_tokens(tokenizer, make_scripted):
    prompt = tokenizer.encode("ab", prepend=tokenizer.bos_id)
    engine = Engine(make_scripted(len(prompt), [A, B, A]), tokenizer)
    sequences, masks = engine.generate_batch(prompt, num_samples=N, max_tokens=5)
    assert sequences == [prompt + [A, B, A, A, A]] * N
    assert masks == [[0] * len(prompt) + [1] * 5] * N


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tokens=[]), "non-empty"),
        (dict(tokens=[1, 265]), r"\[0, 265\)"),
        (dict(tokens=[1, -1]), r"\[0, 265\)"),
        (dict(tokens="hello"), "list of token ids"),
        (dict(num_samples=0), "num_samples"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=2.5), "max_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(seed=2**32), "seed"),
        (dict(seed=-1), "seed"),
        (dict(max_tokens=1281), "max_positions"),  # 10 x sequence_len positions at most
    ],
)
def test_bad_requests_raise_generation_error(engine, kwargs, message):
    request = dict(tokens=[1, 2, 3], max_tokens=4) | kwargs
    tokens = request.pop("tokens")
    for mode in ("cached", "padded", "fast"):
        with pytest.raises(GenerationError, match=message):
            getattr(engine, f"generate_{mode}")(tokens, **request)  # raised at the call, not at the first next()


def test_bad_engine_setup_raises(draft, engine, tokenizer, make_model):
    other_vocab = make_model(0, vocab_size=300)
    with pytest.raises(GenerationError, match="vocab"):
        Engine(other_vocab, tokenizer)
    with pytest.raises(GenerationError, match="cache_block"):
        EngineConfig(cache_block=0)
    with pytest.raises(GenerationError, match="mode"):
        engine.generate_batch([1, 2], mode="turbo")
    with pytest.raises(GenerationError, match="fills"):
        engine.generate([1] * 128)  # max_tokens=None with the context already full
    with pytest.raises(GenerationError, match="k "):
        engine.generate_speculative([1, 2], draft, k=0)
    with pytest.raises(GenerationError, match="draft vocab"):
        engine.generate_speculative([1, 2], other_vocab)


def test_shapes_are_bucketed(engine):
    """Prompt lengths and max_tokens map onto few shapes: prompts pad to powers of two, caches to 256s."""
    short = engine._request([1] * 5, 1, 10, 1.0, None, None, 0)
    longer = engine._request([1] * 17, 1, 300, 1.0, None, None, 0)
    assert short.prompt.shape == (1, 16) and short.cache_len == 256
    assert longer.prompt.shape == (1, 32) and longer.cache_len == 512
    assert np.array_equal(longer.prompt[0, :17], [1] * 17) and not longer.prompt[0, 17:].any()
