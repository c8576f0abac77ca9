import numpy as np
import pytest
from flax import nnx

from flaxchat.model import GPT, GPTConfig
from flaxchat.model.counting import (
    decode_flops_per_token,
    flops_per_token,
    num_matmul_params,
    num_scaling_params,
    param_counts,
    prefill_flops,
)
from flaxchat.model.params import named_params

# nanochat's reference numbers (vocab 32768, head_dim 128, seq 2048, SSSL).
REFERENCE = {
    12: (25_165_824, 150_994_944, 25_165_824, 84_935_088, 50, 286_261_730, 110_100_936, 759_696_048),
    20: (41_943_040, 419_430_400, 41_943_040, 393_217_200, 66, 896_533_746, 435_160_264, 2_886_212_784),
    24: (50_331_648, 603_979_776, 50_331_648, 679_478_976, 74, 1_384_122_122, 729_810_648, 4_775_225_616),
}


@pytest.mark.parametrize("depth", sorted(REFERENCE))
def test_counts_match_nanochat_reference(depth):
    cfg = GPTConfig.from_depth(depth)
    c = param_counts(cfg)
    got = (c["wte"], c["value_embeds"], c["lm_head"], c["transformer_matrices"], c["scalars"], c["total"])
    assert got + (num_matmul_params(cfg), flops_per_token(cfg)) == REFERENCE[depth]


def test_cpu_run_config():
    cfg = GPTConfig.from_depth(6, head_dim=64, max_seq_len=512, window_pattern="L")
    assert param_counts(cfg)["total"] == 73_531_646
    assert num_scaling_params(cfg) == 23_199_960
    assert flops_per_token(cfg) == 153_355_680


@pytest.mark.parametrize(
    "cfg",
    [
        GPTConfig(sequence_len=64, vocab_size=100, n_layer=3, n_head=4, n_kv_head=2, n_embd=64),
        GPTConfig(sequence_len=64, vocab_size=257, n_layer=4, n_head=2, n_kv_head=1, n_embd=48, tie_embeddings=True),
        GPTConfig(sequence_len=64, vocab_size=64, n_layer=1, n_head=1, n_kv_head=1, n_embd=32, mlp="gelu"),
    ],
)
def test_counts_agree_with_the_real_model(cfg):
    model = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
    params = named_params(model)
    sizes = {k: int(np.prod(v.shape)) for k, v in params.items()}
    c = param_counts(cfg)
    assert sum(sizes.values()) == c["total"]
    assert sizes["wte"] == c["wte"] and sizes.get("lm_head", 0) == c["lm_head"]
    assert sum(v for k, v in sizes.items() if k.startswith("value_embeds.")) == c["value_embeds"]
    assert sum(v for k, v in sizes.items() if k.startswith("blocks.")) == c["transformer_matrices"]


def test_inference_flop_formulas():
    cfg = GPTConfig.from_depth(4, max_seq_len=1024, window_pattern="SL")  # windows 256, 1024, 256, 1024
    mm = num_matmul_params(cfg)
    per_layer = 4 * cfg.n_head * cfg.head_dim
    assert decode_flops_per_token(cfg, 100) == 2 * mm + per_layer * 100 * 4
    assert decode_flops_per_token(cfg, 600) == 2 * mm + per_layer * (256 + 600 + 256 + 600)
    n = 300  # short layers: w=256 -> 256*257/2 + 44*256; long layers: w=300 -> 300*301/2
    assert prefill_flops(cfg, n) == 2 * mm * n + per_layer * 2 * ((256 * 257 // 2 + 44 * 256) + 300 * 301 // 2)
