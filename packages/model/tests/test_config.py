import pytest

from flaxchat.model import ConfigError, GPTConfig


@pytest.mark.parametrize(
    "depth,head_dim,n_embd,n_head",
    [(4, 128, 256, 2), (5, 128, 384, 3), (6, 64, 384, 6), (12, 128, 768, 6), (20, 128, 1280, 10), (24, 128, 1536, 12), (26, 128, 1664, 13)],
)
def test_from_depth_matches_nanochat_table(depth, head_dim, n_embd, n_head):
    cfg = GPTConfig.from_depth(depth, head_dim=head_dim)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim) == (depth, n_embd, n_head, n_head, head_dim)


@pytest.mark.parametrize("seq,short", [(2048, 512), (1024, 256), (512, 128), (256, 128), (3000, 768)])
def test_short_window_is_a_quarter_rounded_up_to_128(seq, short):
    cfg = GPTConfig.from_depth(4, max_seq_len=seq, window_pattern="S")
    assert cfg.window_sizes == (short, short, short, seq)  # the last layer is always long


def test_window_pattern_tiles_and_last_layer_is_long():
    cfg = GPTConfig.from_depth(20, window_pattern="sssl")
    assert cfg.window_pattern == "SSSL"
    longs = [i for i, w in enumerate(cfg.window_sizes) if w == 2048]
    assert longs == [3, 7, 11, 15, 19] and set(cfg.window_sizes) == {512, 2048}
    assert GPTConfig.from_depth(5, window_pattern="L").window_sizes == (2048,) * 5


def test_value_embedding_layers_and_backout():
    assert GPTConfig.from_depth(12).value_embed_layers == (1, 3, 5, 7, 9, 11)
    assert GPTConfig.from_depth(20).value_embed_layers == tuple(range(1, 20, 2))
    assert GPTConfig.from_depth(6, head_dim=64).value_embed_layers == (1, 3, 5)
    assert GPTConfig.from_depth(5).value_embed_layers == (0, 2, 4)
    assert GPTConfig.from_depth(20).backout_layer == 10 and GPTConfig.from_depth(12).backout_layer == 6


def test_padded_vocab():
    assert GPTConfig(vocab_size=32768).padded_vocab == 32768
    assert GPTConfig(vocab_size=4100).padded_vocab == 4160


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = GPTConfig.from_depth(6, head_dim=64, max_seq_len=512, window_pattern="L", mlp="gelu", tie_embeddings=True)
    cfg.save(tmp_path / f"c{suffix}")
    assert GPTConfig.load(tmp_path / f"c{suffix}") == cfg
    assert cfg.replace(n_layer=3).n_layer == 3 and cfg.n_layer == 6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n_embd": 100, "n_head": 3}, "divisible by n_head"),
        ({"n_head": 6, "n_kv_head": 4}, "divisible by n_kv_head"),
        ({"window_pattern": "SXL"}, "window_pattern"),
        ({"mlp": "swiglu"}, "mlp must be"),
        ({"n_layer": 0}, "positive integer"),
    ],
)
def test_invalid_configs_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GPTConfig(**kwargs)


def test_bad_files_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        GPTConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid json"):
        GPTConfig.load(tmp_path / "bad.json")
    (tmp_path / "extra.yaml").write_text("n_layer: 2\nwidth: 3\n")
    with pytest.raises(ConfigError, match="unknown config keys"):
        GPTConfig.load(tmp_path / "extra.yaml")
