"""`apps/bench serve` end to end on a tiny model: real servers, real streaming clients, 1 and 2 streams.

The model is conftest's tiny GPT with a 512-token vocabulary, saved as a checkpoint with the
synthetic tokenizer, so the app's --model path (the checkpoint's tokenizer) is the one measured.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
from flaxchat.infer.serve_benchmark import ServeBenchConfig, ServeBenchError, bench_serve, synthetic_tokenizer
from flaxchat.model.checkpoint import save_checkpoint

APP = Path(__file__).resolve().parents[3] / "apps" / "bench" / "__main__.py"
VOCAB = 512
PROMPT, MAX_TOKENS, PER_STREAM = 16, 32, 2


def bench_app():
    spec = importlib.util.spec_from_file_location("bench_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def vocab_model(make_model):
    return make_model(0, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def report(tmp_path_factory, vocab_model):
    """(table lines, JSON document) of one `serve` run at concurrency 1 and 2. Only stdout is redirected:
    uvicorn reconfigures logging, and absl's handler closes its stream unless it is the current sys.stderr."""
    path = save_checkpoint(tmp_path_factory.mktemp("serve") / "tiny", vocab_model, synthetic_tokenizer(VOCAB))
    flags = ["--model", str(path), "--concurrency", "1,2", "--prompt-tokens", str(PROMPT),
             "--max-tokens", str(MAX_TOKENS), "--requests-per-stream", str(PER_STREAM)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_app().main(["serve", *flags]) == 0
    lines = out.getvalue().strip().splitlines()
    return lines[:-1], json.loads(lines[-1])


def test_the_report_has_a_row_per_level_and_json_last(report):
    table, doc = report
    assert doc["bench"] == "serve" and doc["vocab_size"] == VOCAB and doc["slots"] == 2
    assert doc["cache_len"] == 128 and doc["prompt_tokens"] == PROMPT and doc["max_tokens"] == MAX_TOKENS
    assert [e["concurrency"] for e in doc["levels"]] == [1, 2]
    assert any(line.startswith("1 streams") for line in table) and any(line.startswith("2 streams") for line in table)
    assert any(line.startswith("speedup") for line in table)
    speedup = doc["aggregate_speedup"]
    assert (speedup["concurrency"], speedup["baseline"]) == (2, 1)
    assert speedup["ratio"] == pytest.approx(doc["levels"][1]["aggregate_tok_per_s"] / doc["levels"][0]["aggregate_tok_per_s"],
                                             rel=0.01)


def test_tokens_are_the_ones_the_scheduler_generated(report):
    for e in report[1]["levels"]:
        assert e["requests"] == e["concurrency"] * PER_STREAM
        assert sum(e["finish_reasons"].values()) == e["requests"]
        assert 0 < e["completion_tokens"] <= e["requests"] * MAX_TOKENS
        # The usage chunks the clients read count exactly what the level's server generated.
        assert e["completion_tokens"] == e["scheduler_generated_tokens"]
        if set(e["finish_reasons"]) == {"length"}:
            assert e["completion_tokens"] == e["requests"] * MAX_TOKENS
        assert e["aggregate_tok_per_s"] == pytest.approx(e["completion_tokens"] / e["wall_s"], rel=0.01)


def test_the_streams_ran_together_and_ttft_is_ordered(report):
    for e in report[1]["levels"]:
        assert e["peak_active"] == e["concurrency"]  # a fresh server per level: its own peak
        assert 0 < e["ttft_ms_p50"] <= e["ttft_ms_p95"] < 1e3 * e["wall_s"]
        assert e["per_stream_tok_per_s"] > 0 and e["requests_without_text"] == 0
    one, two = report[1]["levels"]
    assert one["mean_rows_per_step"] <= 1.0 < two["mean_rows_per_step"] <= 2.0
    assert one["mean_decode_rows"] == 1.0  # a lone stream decodes a one-row batch, whatever the slots


def test_synthetic_tokenizer_has_the_vocab_and_round_trips():
    tokenizer = synthetic_tokenizer(VOCAB)
    assert tokenizer.vocab_size == VOCAB and tokenizer.bos_id == VOCAB - 9
    for text in ("Hello, world! ~{}", "h\u00e9llo \u2014 \u65e5\u672c\n\ttabs"):
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode("!!!!")) == 2  # printable pairs are tokens
    assert synthetic_tokenizer(32768).vocab_size == 32768
    assert len(synthetic_tokenizer(32768).encode("!!!")) == 1  # past the 9025 pairs come triples
    assert synthetic_tokenizer(265).vocab_size == 265  # bytes only
    with pytest.raises(ServeBenchError, match="below 265"):
        synthetic_tokenizer(264)


@pytest.mark.parametrize("settings, message", [
    (dict(concurrency=()), "concurrency"),
    (dict(concurrency=(1, 0)), "concurrency"),
    (dict(concurrency=(2, 2)), "distinct"),
    (dict(prompt_tokens=0), "prompt-tokens"),
    (dict(max_tokens=5000), "at most 4096"),
    (dict(requests_per_stream=True), "requests-per-stream"),
    (dict(temperature=1e-6), "temperature"),
    (dict(temperature=3.0), "temperature"),
    (dict(slots=0), "slots"),
    (dict(cache_len=100), "cache-len"),
    (dict(seed=-1), "seed"),
])
def test_bad_settings_say_what_to_change(settings, message):
    with pytest.raises(ServeBenchError, match=message):
        ServeBenchConfig(**settings)


def test_requests_that_do_not_fit_the_server_are_refused_before_serving(vocab_model):
    with pytest.raises(ServeBenchError, match="exceed the server's cache of 128"):
        bench_serve(vocab_model, synthetic_tokenizer(VOCAB), ServeBenchConfig(prompt_tokens=100, max_tokens=64))
    with pytest.raises(ServeBenchError, match="tokenizer vocab"):
        bench_serve(vocab_model, synthetic_tokenizer(265), ServeBenchConfig())


def test_bad_flags_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit:
        bench_app().main(["serve", "--max-tokens", "0"])
    assert exit.value.code == 2 and "max-tokens must be an integer >= 1" in capsys.readouterr().err
