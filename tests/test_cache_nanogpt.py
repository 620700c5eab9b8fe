"""The model-state cache layer (smear's previous token): its semantics, and that every cache operation
(beam reorder, the engine's fan-out and row removal, reset, crop) keeps cached decoding equal to uncached."""

import pytest
import torch
from transformers.cache_utils import DynamicCache, StaticCache

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.cache_nanogpt import NanoGPTStateLayer, model_state_layer

V = 89


def master_model(seed: int = 0) -> NanoGPTForCausalLM:
    torch.manual_seed(seed)
    config = NanoGPTConfig.nanochat(vocab_size=V, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=64, sliding_window=6,
                                    window_pattern="SSL", bos_token_id=0, eos_token_id=1, pad_token_id=1)
    model = NanoGPTForCausalLM(config).eval()
    with torch.no_grad():  # nanochat's init starts smear off and the residual projections at 0
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "smear_lambda", "backout_lambda", "gate.weight")):
                p.normal_(0, 0.5)
    return model


def test_conv_state_returns_the_inputs_before_each_call():
    layer = NanoGPTStateLayer()
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 1)  # (B, C, T)
    first = layer.update_conv_state(a, conv_kernel_size=1)
    assert torch.equal(first, torch.cat([torch.zeros(2, 3, 1), a], dim=-1))  # nothing came before
    assert torch.equal(layer.update_conv_state(b, conv_kernel_size=1), torch.cat([a[..., -1:], b], dim=-1))
    layer.batch_repeat_interleave(2)
    assert layer.conv_states[0].shape == (4, 3, 1) and torch.equal(layer.conv_states[0][1], b[0])
    layer.batch_select_indices(torch.tensor([3]))
    assert torch.equal(layer.conv_states[0], b[1:])
    layer.reorder_cache(torch.tensor([0, 0]))
    assert torch.equal(layer.conv_states[0], torch.cat([b[1:], b[1:]]))
    layer.reset()  # a reused cache starts from nothing again
    assert torch.equal(layer.update_conv_state(a, conv_kernel_size=1)[..., :1], torch.zeros(2, 3, 1))


def test_recording_the_past_lets_crop_roll_back():
    layer = NanoGPTStateLayer()
    layer.activate_past_recording()
    x = torch.randn(1, 2, 5)
    layer.update_conv_state(x[..., :3], conv_kernel_size=1)
    layer.update_conv_state(x[..., 3:], conv_kernel_size=1)
    layer.crop(-2)  # undo the last two tokens: the state is token 2 again
    assert torch.equal(layer.conv_states[0], x[..., 2:3])


def test_state_slot_sits_after_the_decoder_layers():
    model = master_model()
    for cache in (DynamicCache(config=model.config), DynamicCache(),
                  StaticCache(config=model.config, max_cache_len=32)):
        model(torch.randint(0, V, (1, 5)), cache=cache, use_cache=True)
        assert len(cache.layers) == 4 and isinstance(cache.layers[3], NanoGPTStateLayer)
        assert cache.get_seq_length() == 5 and cache.is_linear == [False, False, False, True]
    with pytest.raises(ValueError, match="cache layer 1 is a DynamicSlidingWindowLayer"):
        model_state_layer(DynamicCache(config=model.config), 1)


def test_selected_and_repeated_rows_decode_as_they_would_alone():
    model = master_model()
    prompts = torch.randint(2, V, (3, 6))
    nxt = torch.randint(2, V, (2, 1))
    cache = DynamicCache(config=model.config)
    model(prompts, cache=cache, use_cache=True)
    cache.batch_select_indices(torch.tensor([2, 0]))  # the engine drops finished rows
    cache.batch_repeat_interleave(2)  # ... and fans one prefill out to several samples
    step = model(nxt.repeat_interleave(2, dim=0), cache=cache, use_cache=True).logits[:, -1]
    for row, (prompt_row, token) in enumerate(zip((2, 0), nxt)):
        alone = model(torch.cat([prompts[prompt_row], token])[None]).logits[0, -1]
        torch.testing.assert_close(step[2 * row], alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(step[2 * row + 1], alone, rtol=1e-5, atol=1e-5)


def test_beam_search_with_the_cache_equals_without():
    model = master_model(seed=1)
    prompt = torch.randint(2, V, (1, 5))
    kw = dict(max_new_tokens=8, num_beams=3, do_sample=False, eos_token_id=None, pad_token_id=1)
    assert torch.equal(model.generate(prompt, **kw), model.generate(prompt, use_cache=False, **kw))
