"""Gradient clipping modes: global (= torch's clip_grad_norm_), per parameter tensor, per block; pre-clip norms."""

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.clipping import clip_gradients, clip_group, gradient_norms


def model_with_grads(seed: int = 0):
    torch.manual_seed(seed)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=32))
    ids = torch.randint(0, 64, (2, 12))
    model(ids, labels=ids).loss.backward()
    return model


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_units_of_each_mode():
    assert clip_group("model.layers.3.mlp.up_proj.weight", "per_layer") == "layers.3"
    assert clip_group("module.model.layers.11.self_attn.q_proj.weight", "per_layer") == "layers.11"
    assert clip_group("model.embed_tokens.weight", "per_layer") == "model.embed_tokens"
    assert clip_group("model.resid_lambdas", "per_layer") == "model"
    assert clip_group("lm_head.weight", "per_param") == "lm_head.weight"
    with pytest.raises(ValueError, match="grad_clip_mode='per_block'"):
        clip_group("x", "per_block")


def test_global_mode_equals_torch_clip_grad_norm():
    ours, ref = model_with_grads(), model_with_grads()
    total = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
    out = clip_gradients(ours.named_parameters(), 0.1, "global")
    assert out["grad_norm"] == pytest.approx(float(total), rel=1e-5) and out["grad_clipped"] == 1
    for (n, g), h in zip(grads(ours).items(), grads(ref).values()):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-8, msg=n)


@pytest.mark.parametrize("mode", ["per_param", "per_layer"])
def test_each_unit_is_clipped_on_its_own_and_prenorms_are_reported(mode):
    model = model_with_grads()
    before = gradient_norms(model.named_parameters(), mode)
    nonzero = sorted(float(v) for v in before.values() if v > 0)  # zero-init projections have zero gradients
    threshold = nonzero[len(nonzero) // 2]  # about half the units exceed it
    untouched = grads(model)
    out = clip_gradients(model.named_parameters(), threshold, mode)
    after = gradient_norms(model.named_parameters(), mode)
    assert out["grad_clipped"] == sum(float(v) > threshold for v in before.values()) > 0
    assert out["grad_norm_max"] == pytest.approx(max(float(v) for v in before.values()))
    for unit, norm in before.items():
        if norm > threshold:
            assert float(after[unit]) == pytest.approx(threshold, rel=1e-4), unit
        else:  # below the threshold: bit for bit unchanged
            assert all(torch.equal(p.grad, untouched[n]) for n, p in model.named_parameters()
                       if p.grad is not None and clip_group(n, mode) == unit), unit
    if mode == "per_layer":
        assert {"layers.0", "layers.1", "lm_head", "model.embed_tokens"} <= set(out["grad_norms"])
        # a block is one unit: its tensors keep their relative sizes
        q, k = "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight"  # non-zero grads
        ratio = untouched[q].norm() / untouched[k].norm()
        params = dict(model.named_parameters())
        assert float(params[q].grad.norm() / params[k].grad.norm()) == pytest.approx(float(ratio), rel=1e-5)


def test_zero_threshold_only_measures():
    model = model_with_grads()
    untouched = grads(model)
    out = clip_gradients(model.named_parameters(), 0.0, "per_layer")
    assert out["grad_clipped"] == 0 and out["grad_norm"] > 0
    assert all(torch.equal(p.grad, untouched[n]) for n, p in model.named_parameters() if p.grad is not None)
