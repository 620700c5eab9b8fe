"""The loss path: the fused, blocked head + softcap + cross-entropy equals the plain path (value and
gradients), the vocabulary crop keeps padded rows out, and every extra term does what it says."""

import pytest
import torch
import torch.nn.functional as F

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.loss_nanogpt import LOSS_TERMS, causal_lm_loss, fused_causal_lm_loss

N, D, V_PADDED, V = 150, 16, 64, 50


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(V_PADDED, D, generator=g, dtype=torch.float64) * 0.7).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)
    y[::7] = -100  # ignored targets
    return h, w, y


def plain(h, w, y, cap, **kw):
    logits = h @ w.t()
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    return causal_lm_loss(logits, y, vocab_size=V, **kw)


@pytest.mark.parametrize("cap", [None, 15.0, 1.5])
@pytest.mark.parametrize("terms", [None, {"z_loss": 1e-2}, {"label_smoothing": 0.1, "z_loss": 1e-3}])
def test_fused_equals_plain_in_value_and_gradients(data, cap, terms):
    h, w, y = data
    a, parts_a = plain(h, w, y, cap, num_items=120, terms=terms)
    grads_a = torch.autograd.grad(a, [h, w])
    b, parts_b = fused_causal_lm_loss(h, w, y, 120, terms, softcap=cap, vocab_size=V, chunk_size=37)  # 5 blocks
    grads_b = torch.autograd.grad(b, [h, w])
    torch.testing.assert_close(b, a, rtol=1e-12, atol=0)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-10, atol=1e-15)
    assert parts_a.keys() == parts_b.keys() == {"ce", *(terms or {})}
    for k in parts_a:
        torch.testing.assert_close(parts_b[k], parts_a[k], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(sum(parts_b.values()), b.detach())  # the parts sum to the loss
    assert grads_b[1][V:].abs().sum() == 0  # padded vocabulary rows: outside the softmax, no gradient
    # without gradients (evaluation) the same value, blockwise
    with torch.no_grad():
        c, _ = fused_causal_lm_loss(h, w, y, 120, terms, softcap=cap, vocab_size=V, chunk_size=37)
    torch.testing.assert_close(c, a.detach(), rtol=1e-12, atol=0)


def test_crop_happens_before_the_softcap_and_the_softmax(data):
    h, w, y = data
    loss, _ = fused_causal_lm_loss(h, w, y, softcap=15.0, vocab_size=V)
    cropped = 15.0 * torch.tanh((h @ w[:V].t()) / 15.0)
    ref = F.cross_entropy(cropped, y, ignore_index=-100)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    uncropped, _ = fused_causal_lm_loss(h, w, y, softcap=15.0)  # all 64 rows in the softmax: a different loss
    assert not torch.isclose(uncropped, ref)


def test_label_smoothing_is_torch_label_smoothing_and_z_loss_is_palm(data):
    h, w, y = data
    logits = (h @ w[:V].t()).detach()
    ours, parts = causal_lm_loss(logits, y, terms={"label_smoothing": 0.1})
    torch.testing.assert_close(ours, F.cross_entropy(logits, y, label_smoothing=0.1), rtol=1e-12, atol=0)
    _, parts = causal_lm_loss(logits, y, terms={"z_loss": 1e-4})
    valid = y != -100
    expected = 1e-4 * torch.logsumexp(logits[valid], dim=-1).square().mean()
    torch.testing.assert_close(parts["z_loss"], expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("term", sorted(LOSS_TERMS))
def test_every_term_changes_the_loss_and_the_gradient(data, term):
    """A term that did nothing (zero value or no gradient) fails here."""
    h, w, y = data
    base, _ = fused_causal_lm_loss(h, w, y, softcap=15.0, vocab_size=V)
    with_term, parts = fused_causal_lm_loss(h, w, y, terms={term: 0.1}, softcap=15.0, vocab_size=V)
    assert abs(parts[term].item()) > 1e-6 and not torch.isclose(base, with_term)
    g0 = torch.autograd.grad(base, w)[0]
    g1 = torch.autograd.grad(with_term, w)[0]
    assert (g1 - g0).abs().max() > 1e-6
    # zero coefficient = off (no entry in the parts)
    _, parts = fused_causal_lm_loss(h, w, y, terms={term: 0.0}, softcap=15.0, vocab_size=V)
    assert set(parts) == {"ce"}


def test_bad_arguments(data):
    h, w, y = data
    with pytest.raises(ValueError, match="unknown loss term 'entropy'; known terms: z_loss, label_smoothing"):
        fused_causal_lm_loss(h, w, y, terms={"entropy": 0.1})
    with pytest.raises(ValueError, match="150 positions of hidden states but 149 targets"):
        fused_causal_lm_loss(h, w, y[:-1])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = NanoGPTConfig.from_depth(2, aspect_ratio=32, head_dim=32, vocab_size=128, max_position_embeddings=32)
    m = NanoGPTForCausalLM(config)
    with torch.no_grad():  # nanochat zero-inits the residual projections: give every gradient something to do
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def test_model_skip_logits_matches_the_logits_path(model):
    x = torch.randint(0, 128, (3, 17))
    labels = x.clone()
    labels[0, :5] = -100
    kw = dict(input_ids=x, labels=labels, loss_terms={"z_loss": 1e-3}, use_cache=False)
    plain_out = model(**kw)
    g_plain = torch.autograd.grad(plain_out.loss, list(model.parameters()))
    fused_out = model(**kw, skip_logits=True)
    g_fused = torch.autograd.grad(fused_out.loss, list(model.parameters()))
    assert fused_out.logits is None and plain_out.logits.shape == (3, 17, 128)
    torch.testing.assert_close(fused_out.loss, plain_out.loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_plain, g_fused):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert set(fused_out.loss_terms) == {"ce", "z_loss"}
    # `labels` are shifted inside: the same loss as next-token `shift_labels`
    shifted = model(input_ids=x, shift_labels=F.pad(labels, (0, 1), value=-100)[:, 1:], use_cache=False)
    torch.testing.assert_close(shifted.loss, model(input_ids=x, labels=labels, use_cache=False).loss)
    with pytest.raises(ValueError, match="skip_logits=True needs labels or shift_labels"):
        model(input_ids=x, skip_logits=True)


def test_model_fused_loss_under_bf16_autocast(model):
    x = torch.randint(0, 128, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_out = model(input_ids=x, labels=x, use_cache=False)
        fused_out = model(input_ids=x, labels=x, use_cache=False, skip_logits=True)
    torch.testing.assert_close(fused_out.loss, plain_out.loss, rtol=2e-2, atol=0)
    g_plain = torch.autograd.grad(plain_out.loss, model.lm_head.weight)[0]
    g_fused = torch.autograd.grad(fused_out.loss, model.lm_head.weight)[0]
    assert g_fused.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(g_plain.flatten(), g_fused.flatten(), dim=0) > 0.99


@pytest.mark.parametrize("terms", [None, {"z_loss": 1e-2}])
def test_grouped_head_gradient_under_bf16_autocast_is_per_block_bookkeeping(data, terms, monkeypatch):
    # on CPU, bf16 gradient blocks are kept for a group (here 4 blocks of 37 and a last group of 2
    # positions) and multiplied once per group; against one product per block only the rounding differs
    import hf_nanogpt.loss_nanogpt as loss_module

    h, w = (t.detach().float().requires_grad_() for t in data[:2])
    y = data[2]

    def grads():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = fused_causal_lm_loss(h, w, y, None, terms, softcap=15.0, vocab_size=V, chunk_size=37)
        return loss, torch.autograd.grad(loss, [h, w])

    assert loss_module.grad_group_rows(37, N, V, torch.device("cpu")) == 148
    grouped_loss, grouped = grads()
    monkeypatch.setattr(loss_module, "grad_group_rows", lambda chunk, *_: chunk)
    block_loss, per_block = grads()
    torch.testing.assert_close(grouped_loss, block_loss, rtol=0, atol=0)
    # the bf16 products round once per group instead of once per block: both within bf16 rounding of
    # the float32 path (measured 0.36-0.40% relative), the grouped one as close as the per-block one
    exact, _ = fused_causal_lm_loss(h, w, y, None, terms, softcap=15.0, vocab_size=V, chunk_size=37)
    exact = torch.autograd.grad(exact, [h, w])
    for a, b, e in zip(grouped, per_block, exact):
        assert a.dtype == torch.float32
        error_grouped, error_block = (a - e).norm() / e.norm(), (b - e).norm() / e.norm()
        assert error_grouped < 1e-2 and error_block < 1e-2
        assert error_grouped <= 1.25 * error_block


def test_float64_hidden_states_with_a_float32_head(data):
    h, w64, y = data
    w = w64.detach().float().requires_grad_()
    loss, _ = fused_causal_lm_loss(h, w, y, softcap=15.0, vocab_size=V, chunk_size=37)
    expected, _ = plain(h, w.double(), y, 15.0)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=0)
    got, want = torch.autograd.grad(loss, [h, w]), torch.autograd.grad(expected, [h, w])
    assert got[1].dtype == torch.float32
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
