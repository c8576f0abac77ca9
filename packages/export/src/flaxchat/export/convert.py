"""JAX -> LiteRT: the model's KV-cache step, exported through StableHLO and converted to one .tflite.

Route: `jax.export` lowers the jitted step (GPT.decode on a KVCache rebuilt from the signature's
tensors, weights closed over as constants) to a StableHLO portable artifact per call length;
litert-converter deserializes each into one MLIR context (identical weight constants are uniqued
there, so the signatures share one copy of the weights), names its signature, merges them and
runs its StableHLO -> TFLite passes. No TensorFlow is involved. Needs the `convert` extra.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flaxchat.export.errors import CONVERTER_HINT, ExportError
from flaxchat.export.package import (
    DECODE,
    INPUT_POS,
    LOGITS,
    QUANTIZATIONS,
    SUFFIX,
    TOKENS,
    PackageConfig,
    prefill_signature,
    state_names,
    write_package,
)
from flaxchat.export.quantize import quantize
from flaxchat.model import GPT
from flaxchat.model.kv_cache import KVCache
from flaxchat.tokenizer import Tokenizer, base_dir

@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What to export: quantization, KV cache length (None = the model's sequence_len), prefill lengths.

    A prompt is fed in chunks of the prefill lengths (largest first) and its remainder, shorter
    than the smallest length, one token at a time through `decode`.
    """

    quantization: str = "fp32"
    max_len: int | None = None
    prefill_lengths: tuple[int, ...] = (8, 32, 128)

    def __post_init__(self):
        if self.quantization not in QUANTIZATIONS:
            raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.max_len is not None and (isinstance(self.max_len, bool) or not isinstance(self.max_len, int)
                                         or self.max_len < 2):
            raise ExportError(f"max_len must be an integer >= 2, got {self.max_len!r}")
        lengths = self.prefill_lengths
        if not isinstance(lengths, tuple) or not lengths or any(
                isinstance(t, bool) or not isinstance(t, int) or t < 2 for t in lengths):
            raise ExportError(f"prefill lengths must be integers >= 2 (single tokens go through decode), "
                              f"got {lengths!r}")
        object.__setattr__(self, "prefill_lengths", tuple(sorted(set(lengths))))

    def cache_len(self, model: GPT) -> int:
        max_len = self.max_len or model.config.sequence_len
        if self.prefill_lengths[-1] > max_len:
            raise ExportError(f"prefill length {self.prefill_lengths[-1]} exceeds the KV cache length {max_len}: "
                              "use shorter prefill lengths or a longer max_len")
        return max_len


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path
    size_bytes: int
    fp32_size_bytes: int  # before quantization (equal to size_bytes for fp32)
    seconds: float


def _converter():
    """The converter's modules; a clear ExportError when the `convert` extra is missing."""
    try:
        from litert_converter.mlir import ir, passmanager
        from litert_converter.mlir._mlir_libs import converter_api_ext
        from litert_converter.mlir.dialects import stablehlo
    except ImportError as e:
        raise ExportError(f"the LiteRT converter is not installed ({e}): {CONVERTER_HINT}") from None
    return ir, passmanager, converter_api_ext, stablehlo


def _step_function(model: GPT) -> Callable:
    """(tokens, input_pos, prev_embedding, *k_caches, *v_caches) -> (logits, prev_embedding, *k, *v)."""
    graphdef, state = nnx.split(model)
    n = model.config.n_layer

    def step(tokens, input_pos, prev_embedding, *kv):
        start = input_pos[:1]  # positions are consecutive: the chunk starts at input_pos[0]
        cache = KVCache(k=tuple(kv[:n]), v=tuple(kv[n:]), pos=start, prev_embedding=prev_embedding, has_prev=start > 0)
        logits, new = nnx.merge(graphdef, state).decode(tokens, cache, last_only=True)
        return (logits, new.prev_embedding, *new.k, *new.v)

    return step


def state_specs(model: GPT, max_len: int) -> list[jax.ShapeDtypeStruct]:
    """Shapes and dtypes of a batch-1 cache as the signatures' state tensors, in state_names order."""
    cache = jax.eval_shape(lambda: KVCache.empty(model.config, 1, max_len))
    return [cache.prev_embedding, *cache.k, *cache.v]


def convert(model: GPT, settings: ExportSettings = ExportSettings(),
            progress: Callable[[str], None] = lambda line: None) -> bytes:
    """The fp32 .tflite flatbuffer of `model` with a prefill signature per length and `decode`."""
    if model.dtype != jnp.float32:
        raise ExportError(f"export a float32 model (load the checkpoint with dtype float32), got {model.dtype}")
    ir, passmanager, converter_api_ext, stablehlo = _converter()
    max_len = settings.cache_len(model)
    names = state_names(model.config.n_layer)
    states = state_specs(model, max_len)
    step = jax.jit(_step_function(model))
    context = ir.Context()
    converter_api_ext.prepare_mlir_context(context)
    modules = []
    with context:
        calls = {prefill_signature(t, settings.prefill_lengths): t for t in settings.prefill_lengths} | {DECODE: 1}
        for signature, length in calls.items():
            start = time.perf_counter()
            exported = jax.export.export(step)(
                jax.ShapeDtypeStruct((1, length), jnp.int32), jax.ShapeDtypeStruct((length,), jnp.int32), *states)
            module = stablehlo.deserialize_portable_artifact(context, exported.mlir_module_serialized)
            converter_api_ext.set_signature(module.operation, signature_name=signature,
                                            input_names=[TOKENS, INPUT_POS, *names], output_names=[LOGITS, *names])
            modules.append(module)
            progress(f"lowered {signature} ({length} tokens per call) in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        merged = converter_api_ext.merge_modules(modules)
        config = converter_api_ext.ConvertToTFLConfig()
        config.model_origin_framework = "JAX"
        converter_api_ext.run_convert_to_tfl_passes(merged, passmanager.PassManager(), config)
        flatbuffer = converter_api_ext.export_flatbuffer_to_bytes(merged.operation)
        progress(f"converted to LiteRT in {time.perf_counter() - start:.1f} s ({len(flatbuffer) / 1e6:,.1f} MB)")
    return flatbuffer


def package_config(model: GPT, settings: ExportSettings, source: dict[str, Any]) -> PackageConfig:
    """What config.json records about `model` exported with `settings`."""
    max_len = settings.cache_len(model)
    specs = zip(state_names(model.config.n_layer), state_specs(model, max_len), strict=True)
    return PackageConfig(
        model=model.config.to_dict(), max_len=max_len, prefill_lengths=settings.prefill_lengths,
        quantization=settings.quantization, state_shapes={name: tuple(s.shape) for name, s in specs}, source=source,
    )


def export_model(model: GPT, tokenizer: Tokenizer, out: str | Path, settings: ExportSettings = ExportSettings(),
                 source: dict[str, Any] | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> ExportResult:
    """Convert (and quantize) `model` and write it with its tokenizer and config as a package at `out`."""
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ExportError(f"tokenizer vocab ({tokenizer.vocab_size}) != model vocab ({model.config.vocab_size}): "
                          "export a model with its own tokenizer")
    start = time.perf_counter()
    flatbuffer = convert(model, settings, progress)
    fp32_size = len(flatbuffer)
    if settings.quantization != "fp32":
        flatbuffer = quantize(flatbuffer, settings.quantization)
        progress(f"quantized to {settings.quantization}: {len(flatbuffer) / 1e6:,.1f} MB")
    config = package_config(model, settings, source or {})
    path = write_package(out, flatbuffer, tokenizer, config)
    return ExportResult(path, len(flatbuffer), fp32_size, time.perf_counter() - start)


def default_export_path(name: str, quantization: str) -> Path:
    """<base>/exports/NAME[-QUANT].litert"""
    suffix = "" if quantization == "fp32" else f"-{quantization}"
    return base_dir() / "exports" / f"{name}{suffix}{SUFFIX}"


def export_checkpoint(name_or_path: str | Path, out: str | Path | None = None,
                      settings: ExportSettings = ExportSettings(),
                      progress: Callable[[str], None] = lambda line: None) -> ExportResult:
    """Export a saved checkpoint (a name under <base>/models or a path); CheckpointError if it cannot be loaded."""
    from flaxchat.model.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(name_or_path)
    model, tokenizer, metadata = load_checkpoint(path)
    progress(f"loaded checkpoint {path}")
    out = Path(out) if out is not None else default_export_path(path.name, settings.quantization)
    source = {"checkpoint": path.name, "metadata": metadata}
    return export_model(model, tokenizer, out, settings, source, progress)
