"""Shared by every package's tests: exact fp32 matmuls.

The tests compare against fp32 references (NumPy, the full forward, another generation mode)
with tight tolerances; GPUs run fp32 matmuls in TF32 by default, which breaks them.
"""

import importlib.util

if importlib.util.find_spec("jax") is not None:  # the tokenizer's own environment has no jax
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
