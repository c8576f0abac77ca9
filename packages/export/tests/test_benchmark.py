"""bench_export on the tiny model: sizes, speeds and agreement are reported for each file and JAX."""

import pytest
from flaxchat.export.benchmark import ExportBenchConfig, bench_export
from flaxchat.export.errors import ExportError


def test_bench_export_reports_size_speed_and_agreement(model):
    cfg = ExportBenchConfig(quantizations=("fp32", "int8"), context=40, steps=8, prefill_lengths=(8, 32))
    result = bench_export(model, cfg)
    assert (result["max_len"], result["prompt_tokens"], result["steps"]) == (256, 36, 8)
    assert result["jax"]["decode_tok_per_s"] > 0 and result["convert_s"] > 0
    fp32, int8 = result["litert"]
    assert (fp32["quantization"], int8["quantization"]) == ("fp32", "int8")
    assert int8["size_bytes"] < fp32["size_bytes"]
    assert fp32["greedy_agreement"] == 1.0  # fp32 LiteRT follows JAX's greedy tokens exactly
    for run in (result["jax"], fp32, int8):
        assert run["ms_per_token"] > 0 and run["prefill_tok_per_s"] > 0
        assert run["decode_tok_per_s"] == pytest.approx(1e3 / run["ms_per_token"])


def test_bench_export_refuses_what_does_not_fit(model):
    with pytest.raises(ExportError, match="does not fit the KV cache"):
        bench_export(model, ExportBenchConfig(context=300, steps=8))
    with pytest.raises(ExportError, match="quantizations"):
        ExportBenchConfig(quantizations=("int4",))
