"""Post-training quantization of an exported .tflite with LiteRT's quantizer (the `convert` extra).

int8              dynamic range: per-channel int8 weights of every fully connected / batched
                  matmul (trunk and LM head); activations are quantized on the fly, so the
                  matmuls run in int8 (smaller and faster on CPU).
int8-weight-only  the same int8 weights, dequantized to fp32 before float matmuls (closer to fp32).

The embedding tables (token and value embeddings) stay fp32 either way: the model reads them with
a gather, which the quantizer's int8 recipes do not cover.
"""

from __future__ import annotations

from flaxchat.export.errors import CONVERTER_HINT, ExportError


def _recipe(quantization: str):
    try:
        from litert_quantizer import recipe
    except ImportError as e:
        raise ExportError(f"the LiteRT quantizer is not installed ({e}): {CONVERTER_HINT}") from None
    recipes = {"int8": recipe.dynamic_wi8_afp32, "int8-weight-only": recipe.weight_only_wi8_afp32}
    if quantization not in recipes:
        raise ExportError(f"quantization must be one of {sorted(recipes)}, got {quantization!r}")
    return recipes[quantization]()


def quantize(flatbuffer: bytes, quantization: str) -> bytes:
    """The quantized flatbuffer of an fp32 one."""
    from litert_quantizer import quantizer

    recipe = _recipe(quantization)
    q = quantizer.Quantizer(bytearray(flatbuffer), recipe)
    return bytes(q.quantize(enable_progress_bar=False, enable_progress_report=False).quantized_model)
