"""flaxchat.export: LiteRT (.tflite) export and a jax-free runner.

Runner (ai-edge-litert, tiktoken, numpy): package, runtime, generate, run (the CLI).
Conversion (the `convert` extra: jax, flax, litert-converter, litert-quantizer): convert,
quantize, benchmark. Nothing is imported here, so the runner never loads jax.
"""
