"""The tool state machine: python blocks run the calculator or the sandbox, and the output is forced (mask 0)."""

import pytest
from flaxchat.infer.engine import Engine

N = 3  # num_samples, as in test_engine.py (shared compilations)
X = ord("x")  # what the scripted model would emit where the Engine forces tokens instead


def special(tokenizer, name):
    return tokenizer.encode_special(f"<|{name}|>")


def tool_script(tokenizer, code: str, forced_len: int):
    """python_start, code, python_end, placeholders for the forced output, "ok", assistant_end."""
    return (
        [special(tokenizer, "python_start"), *tokenizer.encode(code), special(tokenizer, "python_end")]
        + [X] * forced_len
        + [*tokenizer.encode("ok"), special(tokenizer, "assistant_end")]
    )


def forced_output(tokenizer, text: str):
    return [special(tokenizer, "output_start"), *tokenizer.encode(text), special(tokenizer, "output_end")]


def run_tool_script(tokenizer, make_scripted, code: str, output: str):
    prompt = tokenizer.encode("calc", prepend=tokenizer.bos_id)
    forced = forced_output(tokenizer, output)
    engine = Engine(make_scripted(len(prompt), tool_script(tokenizer, code, len(forced))), tokenizer)
    stream = list(engine.generate(prompt, num_samples=N, max_tokens=80, temperature=0.0))
    call = [special(tokenizer, "python_start"), *tokenizer.encode(code), special(tokenizer, "python_end")]
    expected_tokens = call + forced + [*tokenizer.encode("ok"), special(tokenizer, "assistant_end")]
    expected_masks = [1] * len(call) + [0] * len(forced) + [1, 1, 1]
    assert [column for column, _ in stream] == [[t] * N for t in expected_tokens]
    assert [mask for _, mask in stream] == [[m] * N for m in expected_masks]
    return engine, prompt, expected_tokens, expected_masks


@pytest.mark.parametrize(
    "code, output",
    [("2+3", "5"), ("0.2*50", "10.0"), ("1,000 * 3", "3000"), ('"strawberry".count("r")', "3")],
)
def test_calculator_output_is_forced(tokenizer, make_scripted, code, output):
    run_tool_script(tokenizer, make_scripted, code, output)


@pytest.mark.parametrize(
    "code, output",
    [("print(6*7)", "42"), ("1/0", "ZeroDivisionError: division by zero"), ("x = 1", "")],
)
def test_blocks_the_calculator_refuses_run_in_the_sandbox(tokenizer, make_scripted, code, output):
    run_tool_script(tokenizer, make_scripted, code, output)


def test_generate_batch_keeps_forced_tokens_with_mask_0(tokenizer, make_scripted):
    engine, prompt, tokens, masks = run_tool_script(tokenizer, make_scripted, "2+3", "5")
    sequences, seq_masks = engine.generate_batch(prompt, num_samples=N, max_tokens=40, temperature=0.0)
    assert sequences == [prompt + tokens[:-1]] * N  # without the final <|assistant_end|>
    assert seq_masks == [[0] * len(prompt) + masks[:-1]] * N


def test_fast_mode_does_not_run_tools(tokenizer, make_scripted):
    prompt = tokenizer.encode("calc", prepend=tokenizer.bos_id)
    script = tool_script(tokenizer, "2+3", 3)
    engine = Engine(make_scripted(len(prompt), script), tokenizer)
    stream = list(engine.generate_fast(prompt, num_samples=N, max_tokens=40, temperature=0.0))
    assert [column for column, _ in stream] == [[t] * N for t in script]  # placeholders pass through
    assert all(mask == [1] * N for _, mask in stream)


def test_tool_state_is_per_row(tokenizer, make_scripted):
    """Rows that open a python block get its output; rows that do not see python_end as a plain token."""
    prompt = tokenizer.encode("calc", prepend=tokenizer.bos_id)
    start, end = special(tokenizer, "python_start"), special(tokenizer, "python_end")
    forced = forced_output(tokenizer, "5")
    script = [{start, ord("a")}, *tokenizer.encode("2+3"), end] + [X] * len(forced) + [special(tokenizer, "assistant_end")]
    engine = Engine(make_scripted(len(prompt), script), tokenizer)
    for seed in range(20):
        sequences, masks = engine.generate_batch(prompt, num_samples=N, max_tokens=40, temperature=1.0, seed=seed)
        if len({seq[len(prompt)] for seq in sequences}) == 2:
            break
    else:
        pytest.fail("no seed in 0..19 made the rows choose differently")
    for seq, mask in zip(sequences, masks):
        generated, generated_mask = seq[len(prompt) :], mask[len(prompt) :]
        if generated[0] == start:
            assert generated == [start, *tokenizer.encode("2+3"), end, *forced]
            assert generated_mask == [1] * 5 + [0] * len(forced)
        else:
            assert generated == [ord("a"), *tokenizer.encode("2+3"), end] + [X] * len(forced)
            assert generated_mask == [1] * (5 + len(forced))
