"""Mixture of Experts: dispatch equals a per-token reference, router losses and balancing, the config's checks,
cached generation, Muon one expert at a time, parameter accounting."""

import pytest
import torch
import torch.nn.functional as F

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.moe_nanogpt import NanoGPTMoE, grouped_matmul, moe_step
from hf_nanogpt.optim import MuonAdamW, build_optimizer, classify_parameters

V = 61


def config(**overrides) -> NanoGPTConfig:
    fields = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                  num_experts=4, num_experts_per_tok=2, init_scheme="gpt2")
    return NanoGPTConfig(**{**fields, **overrides})


def reference_moe(moe: NanoGPTMoE, x: torch.Tensor, act) -> torch.Tensor:
    """Token by token, expert by expert: sum_j w_j expert_j(x) + shared experts (weight 1)."""
    _, weights, experts = moe.router(x)
    up, down = moe.experts.up_proj, moe.experts.down_proj
    rows = []
    for t in range(x.shape[0]):
        chosen = list(zip(experts[t].tolist(), weights[t])) + [(e, 1.0) for e in range(moe.num_experts,
                                                                                     moe.num_experts + moe.num_shared)]
        rows.append(sum(w * (down[e] @ act(up[e] @ x[t])) for e, w in chosen))
    return torch.stack(rows)


@pytest.mark.parametrize("act,shared,width", [("relu2", 0, 24), ("swiglu", 1, 24), ("gelu_tanh", 2, 13)])
def test_dispatch_equals_a_per_token_reference(act, shared, width):
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(config(hidden_act=act, num_shared_experts=shared, moe_intermediate_size=width))
    moe = model.model.layers[0].mlp
    with torch.no_grad():
        moe.experts.down_proj.normal_()
    x = torch.randn(11, 32, requires_grad=True)
    fn = {"relu2": lambda h: F.relu(h).square(), "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
          "swiglu": lambda h: F.silu(h[:width]) * h[width:]}[act]
    got, ref = moe(x), reference_moe(moe, x, fn)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    (gx,) = torch.autograd.grad(got.square().sum(), x)
    (rx,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5)


def test_grouped_matmul_equals_segments_also_with_empty_groups():
    x, w = torch.randn(10, 8), torch.randn(3, 16, 8)
    offsets = torch.tensor([4, 4, 10], dtype=torch.int32)  # expert 1 gets no token
    ref = torch.cat([x[:4] @ w[0].T, x[4:] @ w[2].T])
    torch.testing.assert_close(grouped_matmul(x, w, offsets), ref)
    torch.testing.assert_close(grouped_matmul(x[:, :5], w[:, :, :5], offsets), ref * 0 + torch.cat(
        [x[:4, :5] @ w[0, :, :5].T, x[4:, :5] @ w[2, :, :5].T]))  # 20-byte rows: the segment path


def test_sigmoid_router_bias_picks_but_does_not_weigh_and_balancing_moves_it():
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(config(router_activation="sigmoid", moe_balancing="bias", num_experts_per_tok=1))
    router = model.model.layers[0].mlp.router
    x = torch.randn(64, 32)
    logits, w, e = router(x)
    torch.testing.assert_close(w, torch.sigmoid(logits).gather(-1, e))  # top-1 weight: the expert's own score
    router.expert_bias[3] = 100.0  # expert 3 wins every choice, but is weighed by its score, not the bias
    _, w2, e2 = router(x)
    assert (e2 == 3).all()
    torch.testing.assert_close(w2[:, 0], torch.sigmoid(logits[:, 3]))
    router.expert_bias.zero_()
    model.train()
    model(torch.randint(0, V, (2, 16)), labels=torch.randint(0, V, (2, 16)))
    loads = [layer.mlp.router.load.clone() for layer in model.model.layers]
    log = moe_step(model)
    for layer, load in zip(model.model.layers, loads):  # under-loaded experts up by the rate, over-loaded down
        assert torch.equal(layer.mlp.router.expert_bias, 1e-3 * torch.sign(load.mean() - load))
        assert layer.mlp.router.load is None
    assert log["moe_load_max_over_mean"] == [round(float(v.max() / v.mean()), 4) for v in loads]
    assert moe_step(model) == {}  # nothing routed since


def test_router_logits_and_aux_loss_the_hf_way():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    torch.manual_seed(0)
    model = NanoGPTForCausalLM(config(mlp_layer_types=["dense", "moe"], router_z_loss_coef=1e-3)).eval()
    ids = torch.randint(0, V, (2, 9))
    plain = model(ids, labels=ids)
    assert plain.aux_loss is None and plain.router_logits is None  # eval, not asked: the dense model's loss
    out = model(ids, labels=ids, output_router_logits=True)
    assert len(out.router_logits) == 1 and out.router_logits[0].shape == (18, 4)
    aux = load_balancing_loss_func(out.router_logits, 4, 2, None)
    z = torch.logsumexp(out.router_logits[0], dim=-1).square().mean()
    torch.testing.assert_close(out.aux_loss, 0.01 * aux + 1e-3 * z)
    torch.testing.assert_close(out.loss, plain.loss + out.aux_loss)
    model.config.output_router_logits = True  # the config's flag does the same
    torch.testing.assert_close(model(ids, labels=ids).aux_loss, out.aux_loss)
    assert not model(ids, output_router_logits=False).router_logits  # the argument wins
    model.config.output_router_logits = False
    model.train()  # training always adds the router losses
    torch.testing.assert_close(model(ids, labels=ids).loss, out.loss)


@pytest.mark.parametrize("overrides,message", [
    (dict(num_experts_per_tok=5), "top-k cannot exceed"),
    (dict(num_experts=0, mlp_layer_types=["moe", "dense"]), "num_experts"),
    (dict(router_activation="relu"), "router_activation"),
    (dict(moe_balancing="none"), "moe_balancing"),
    (dict(mlp_layer_types=["moe"]), "mlp_layer_types"),
    (dict(router_aux_loss_coef=-1.0), "router_aux_loss_coef"),
])
def test_impossible_moe_configs_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_cached_generation_equals_uncached_also_left_padded():
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(config(num_shared_experts=1, router_activation="sigmoid", moe_balancing="bias",
                                      init_scheme="nanochat_jan2026", pad_token_id=0)).eval()
    for p in model.parameters():  # nanochat zero-inits the output projections: make the experts matter
        if p.ndim == 3:
            torch.nn.init.normal_(p, std=0.2)
    ids = torch.randint(1, V, (2, 6))
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0  # row 1 left-padded
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None, attention_mask=mask)
    with torch.no_grad():
        cached, uncached = model.generate(ids, **kw), model.generate(ids, use_cache=False, **kw)
        alone = model.generate(ids[1:, 2:], max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(cached, uncached) and torch.equal(cached[1, 2:], alone[0])


def test_muon_orthogonalises_each_expert_like_a_separate_matrix():
    torch.manual_seed(0)
    stack = torch.nn.Parameter(torch.randn(3, 16, 8))
    singles = [torch.nn.Parameter(stack.detach()[e].clone()) for e in range(3)]
    grads = torch.randn(2, 3, 16, 8)
    a = MuonAdamW([dict(kind="muon", params=[stack], lr=0.02)])
    b = MuonAdamW([dict(kind="muon", params=singles, lr=0.02)])
    for g in grads:
        stack.grad = g.clone()
        for e, p in enumerate(singles):
            p.grad = g[e].clone()
        a.step(), b.step()
    for e, p in enumerate(singles):
        torch.testing.assert_close(stack.detach()[e], p.detach(), rtol=1e-6, atol=1e-6)
    assert a.state[stack]["second_momentum_buffer"].shape == (3, 16, 1)


def test_optimizer_groups_and_active_parameters():
    model = NanoGPTForCausalLM(config(num_shared_experts=1, moe_intermediate_size=16))
    groups = {k: [n for n, _ in v] for k, v in classify_parameters(model).items()}
    assert groups["router"] == [f"model.layers.{i}.mlp.router.gate.weight" for i in range(2)]
    assert {f"model.layers.{i}.mlp.experts.{w}" for i in range(2) for w in ("up_proj", "down_proj")} <= set(
        groups["matrix"])
    opt = build_optimizer(model)
    assert {g["name"]: g["kind"] for g in opt.param_groups}["router"] == "adamw"
    counts = model.parameter_counts()
    per_expert = 2 * 32 * 16  # up (16, 32) + down (32, 16)
    assert counts["total"] - counts["active"] == 2 * (4 - 2) * per_expert  # 2 layers, E - k experts idle
    assert "model.layers.0.mlp.router.expert_bias" in model.state_dict()  # saved and resumed, never optimised
