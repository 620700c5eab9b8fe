"""Attention maps (hf_nanogpt.analysis.attention, analyze.py attention) on a tiny sliding-window nanochat model."""

import runpy

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.analysis.attention import allowed_mask, attention_maps, plot_attention

TEXT = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    torch.manual_seed(0)
    # nanochat master (smear, value embeddings, backout, QK scale): the default architecture
    config = NanoGPTConfig.nanochat(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, max_position_embeddings=64, window_pattern="SL",
                                    sliding_window=4, bos_token_id=tiny_tokenizer.bos_token_id)
    model = NanoGPTForCausalLM(config)
    with torch.no_grad():  # nanochat zero-inits the output projections; give the blocks something to do
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("attn_model")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_weights_are_causal_rows_with_the_window_band(model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids, labels, weights = attention_maps(model, tiny_tokenizer, TEXT)
    assert model.config._attn_implementation == "sdpa"  # switched to eager for the call only
    T = len(ids)
    assert ids[0] == tiny_tokenizer.bos_token_id and len(labels) == T and labels[0] == "<|bos|>"
    assert "\\n" in "".join(labels) and "·" in "".join(labels)  # newlines and spaces made visible
    assert [w.shape for w in weights] == [(2, T, T)] * 2
    for layer, window in enumerate(model.config.window_sizes):  # [4, None]: sliding, then full
        w = weights[layer]
        torch.testing.assert_close(w.sum(-1), torch.ones(2, T))  # each query's weights sum to 1
        visible = allowed_mask(T, window)
        assert torch.all(w[:, ~visible] == 0) and torch.all(w[:, visible] > 0)
    assert allowed_mask(6, 4)[5].tolist() == [False, False, True, True, True, True]  # 4 tokens, current included
    with pytest.raises(ValueError, match="at most 64 fit"):
        attention_maps(model, tiny_tokenizer, "x " * 200)


def test_layouts_and_script(model_dir, repo_root, tmp_path, tiny_tokenizer, capsys):
    main = runpy.run_path(str(repo_root / "scripts" / "analyze.py"))["main"]
    text = "x = 1\n"  # a few tokens: small figures render fast
    written = main(["attention", "--model", str(model_dir), "--text", text, "--output_dir", str(tmp_path / "grid")])
    assert [p.name for p in written] == ["attention_layer0.png", "attention_layer1.png"]
    one = main(["attention", "-i", str(model_dir), "--text", text, "--layer", "1", "--head", "0",
                "--output_dir", str(tmp_path / "one")])
    assert [p.name for p in one] == ["attention_layer1_head0.png"]
    for path in written + one:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = [torch.rand(2, 3, 3)] * 3
    assert [p.name for p in plot_attention(weights, ["a", "b", "c"], [None] * 3, tmp_path / "h", head=1)] == [
        "attention_head1.png"]
    with pytest.raises(SystemExit, match="--head 5 is out of range: the model has 2 heads"):
        main(["attention", "--model", str(model_dir), "--text", text, "--head", "5", "--output_dir", str(tmp_path)])
    assert "wrote" in capsys.readouterr().out
