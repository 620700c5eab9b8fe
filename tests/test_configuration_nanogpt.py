"""NanoGPTConfig: sizing rule, aliases, derived fields, validation errors that name the field."""

import pytest

from hf_nanogpt import NanoGPTConfig


def test_from_depth_follows_nanochat_sizing_rule():
    # width = 64 * depth rounded up to whole 128-dim heads; heads = width / 128
    for depth, width in [(4, 256), (12, 768), (20, 1280), (26, 1664), (32, 2048), (5, 384)]:
        cfg = NanoGPTConfig.from_depth(depth)
        assert cfg.num_hidden_layers == depth
        assert cfg.hidden_size == width
        assert cfg.num_attention_heads == width // 128 and cfg.head_dim == 128
        assert cfg.intermediate_size == 4 * width
    assert NanoGPTConfig.from_depth(20, vocab_size=65536).vocab_size == 65536


def test_nanogpt_aliases_and_standard_names():
    cfg = NanoGPTConfig(n_layer=3, n_embd=96, n_head=3, n_kv_head=1, block_size=128)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (3, 96, 3)
    assert cfg.num_key_value_heads == 1 and cfg.max_position_embeddings == 128
    assert cfg.n_layer == 3 and cfg.sequence_len == 128 and cfg.head_dim == 32


def test_window_pattern_tiles_and_keeps_last_layer_full():
    cfg = NanoGPTConfig(num_hidden_layers=6, hidden_size=64, num_attention_heads=2, window_pattern="SSSL",
                        max_position_embeddings=256)
    assert cfg.layer_types == ["sliding_attention"] * 3 + ["full_attention", "sliding_attention", "full_attention"]
    assert cfg.sliding_window == 129  # nanochat: ceil(T / 4 / 128) * 128 to the left, plus the current token
    assert cfg.window_sizes == [129, 129, 129, None, 129, None]
    assert NanoGPTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2).layer_types == ["full_attention"] * 2


@pytest.mark.parametrize("seq_len, window", [(2048, 513), (512, 129), (1000, 257), (64, 129)])
def test_default_window_is_nanochat_masters(seq_len, window):
    cfg = NanoGPTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, window_pattern="SL",
                        max_position_embeddings=seq_len)
    assert cfg.sliding_window == window


def test_presets():
    master = NanoGPTConfig.from_depth(12, vocab_size=1000)
    assert master == NanoGPTConfig.nanochat(vocab_size=1000) and master.hidden_size == 768
    assert (master.smear, master.value_embeddings, master.backout, master.qk_scale) == (True, True, True, 1.2)
    assert master.rope_theta == 100000.0 and master.window_pattern == "SSSL" and master.sliding_window == 513
    assert master.padded_vocab_size == 1024 and master.vocab_size == 1000 and master.norm_eps == 2.0**-23
    assert master.value_embedding_layers == [1, 3, 5, 7, 9, 11] and master.backout_layer == 6
    assert master.init_scheme == "nanochat"
    jan = NanoGPTConfig.from_depth(12, vocab_size=1000, preset="nanochat_jan2026", window_pattern="SSSL")
    assert not (jan.smear or jan.value_embeddings or jan.backout) and jan.qk_scale == 1.0
    assert jan.rope_theta == 10000.0 and jan.sliding_window == 1025 and jan.init_scheme == "nanochat_jan2026"
    # the class defaults are what older code saved (every later switch off, no padding)
    plain = NanoGPTConfig()
    assert plain.padded_vocab_size == plain.vocab_size and not (plain.smear or plain.value_embeddings or plain.backout)
    assert NanoGPTConfig.from_depth(4, preset="gpt2").tie_word_embeddings
    with pytest.raises(ValueError, match="preset='llama' is unknown"):
        NanoGPTConfig.from_preset("llama")


def test_round_trip_through_dict_keeps_derived_fields():
    cfg = NanoGPTConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        window_pattern="SL", sliding_window=7)
    again = NanoGPTConfig.from_dict(cfg.to_dict())
    for key in ("layer_types", "sliding_window", "head_dim", "num_key_value_heads", "intermediate_size"):
        assert getattr(again, key) == getattr(cfg, key)


def test_gpt2_family_preset():
    cfg = NanoGPTConfig.gpt2()
    assert cfg.position_embedding == "learned" and cfg.norm_type == "layernorm" and cfg.tie_word_embeddings
    assert cfg.hidden_act == "gelu_tanh" and cfg.bias and cfg.final_logit_softcapping is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_hidden_layers=-1), "num_hidden_layers"),
        (dict(hidden_size=100, num_attention_heads=3), "head_dim"),
        (dict(num_attention_heads=6, num_key_value_heads=4), "num_key_value_heads"),
        (dict(position_embedding="alibi"), "position_embedding"),
        (dict(norm_type="batchnorm"), "norm_type"),
        (dict(hidden_act="tanh"), "hidden_act"),
        (dict(dropout=1.5), "dropout"),
        (dict(final_logit_softcapping=-1.0), "final_logit_softcapping"),
        (dict(pad_vocab_size_to=0), "pad_vocab_size_to"),
        (dict(qk_scale=0.0), "qk_scale"),
        (dict(hidden_size=16, num_attention_heads=2, smear=True), "hidden_size"),
        (dict(init_scheme="xavier"), "init_scheme"),
        (dict(window_pattern="SXL"), "window_pattern"),
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(hidden_size=64, num_attention_heads=2, head_dim=33), "head_dim"),
        (dict(vocab_size=2.5), "vocab_size"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"NanoGPTConfig\.{field}="):
        NanoGPTConfig(**kwargs)


def test_from_depth_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        NanoGPTConfig.from_depth(0)
