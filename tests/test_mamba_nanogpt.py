"""Mamba-2 layers: the chunked scan and the decoding step equal a slow sequential reference, padding and the
cache behave, hybrids generate the same with and without a cache, parameters land in the right groups."""

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.cache_nanogpt import NanoGPTStateLayer
from hf_nanogpt.optim import classify_parameters

V = 61
MAMBA = dict(mamba_head_dim=8, mamba_state_size=4, mamba_chunk_size=4)


def config(**overrides) -> NanoGPTConfig:
    fields = dict(vocab_size=V, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=64,
                  window_pattern="MML", init_scheme="gpt2", **MAMBA)
    return NanoGPTConfig(**{**fields, **overrides})


def sequential_mixer(mixer, x: torch.Tensor) -> torch.Tensor:
    """The Mamba-2 recurrence written out token by token (no chunking, no transformers code)."""
    b, t, _ = x.shape
    z, xbc, dt = mixer.in_proj(x).split([mixer.inner, mixer.conv_dim, mixer.num_heads], dim=-1)
    k = mixer.conv_kernel
    padded = F.pad(xbc, (0, 0, k - 1, 0))  # (B, K - 1 + T, C)
    w = mixer.conv1d.weight[:, 0]  # (C, K)
    conv = torch.stack([(padded[:, i:i + k] * w.T).sum(1) + mixer.conv1d.bias for i in range(t)], dim=1)
    xs, B, C = F.silu(conv).split([mixer.inner, mixer.state_size, mixer.state_size], dim=-1)
    h_, p_, n_ = mixer.num_heads, mixer.head_dim, mixer.state_size
    xs = xs.reshape(b, t, h_, p_)
    dt = F.softplus(dt + mixer.dt_bias)  # (B, T, H)
    A = -torch.exp(mixer.A_log)
    state = torch.zeros(b, h_, p_, n_)
    ys = []
    for i in range(t):  # h_t = exp(dt A) h_{t-1} + dt B x_t;  y_t = C h_t + D x_t
        decay = torch.exp(dt[:, i] * A)[..., None, None]  # (B, H, 1, 1)
        state = decay * state + dt[:, i, :, None, None] * xs[:, i, :, :, None] * B[:, i, None, None, :]
        ys.append((state * C[:, i, None, None, :]).sum(-1) + mixer.D[:, None] * xs[:, i])
    y = torch.stack(ys, dim=1).reshape(b, t, -1)
    return mixer.out_proj(mixer.norm(y, z))


def randomised(model):
    with torch.no_grad():  # non-trivial everything: the out projection, the norm, A, D
        for name, p in model.named_parameters():
            if "mamba" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def test_chunked_scan_and_decoding_step_equal_the_sequential_reference():
    torch.manual_seed(0)
    mixer = randomised(NanoGPTForCausalLM(config())).model.layers[0].mamba
    x = torch.randn(2, 11, 16)  # 11 = 2 chunks of 4 + a partial one
    ref = sequential_mixer(mixer, x)
    torch.testing.assert_close(mixer(x), ref, rtol=1e-4, atol=1e-5)
    cache = DynamicCache()  # prefill 5 tokens (chunked), then one at a time (the step function), then 3 at once
    with torch.no_grad():
        parts = [mixer(x[:, :5], cache=cache)] + [mixer(x[:, i:i + 1], cache=cache) for i in range(5, 8)]
        parts.append(mixer(x[:, 8:], cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), ref, rtol=1e-4, atol=1e-5)
    layer = cache.layers[0]
    assert isinstance(layer, NanoGPTStateLayer)
    assert layer.conv_states[0].shape == (2, mixer.conv_dim, 3) and layer.recurrent_states[1].shape == (2, 4, 8, 4)


def test_a_left_padded_row_computes_what_it_computes_alone():
    torch.manual_seed(0)
    mixer = randomised(NanoGPTForCausalLM(config())).model.layers[0].mamba
    x = torch.randn(1, 7, 16)
    padded = torch.cat([torch.randn(1, 3, 16), x], dim=1)
    mask = torch.tensor([[0, 0, 0] + [1] * 7])
    torch.testing.assert_close(mixer(padded, padding_mask=mask)[:, 3:], mixer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, dict(window_pattern="MSL", sliding_window=4, num_experts=4, smear=True,
                                                value_embeddings=True, init_scheme="nanochat", hidden_size=32)],
                         ids=["hybrid", "hybrid_moe_nanochat"])
def test_hybrid_generation_with_cache_equals_without_also_left_padded(overrides):
    torch.manual_seed(0)
    model = randomised(NanoGPTForCausalLM(config(pad_token_id=0, **overrides))).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "down_proj")):
                torch.nn.init.normal_(p, std=0.2)  # nanochat zero-inits the residual projections
    ids = torch.randint(1, V, (2, 7))
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 0, 0
    kw = dict(max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        cached = model.generate(ids, attention_mask=mask, **kw)
        assert torch.equal(cached, model.generate(ids, attention_mask=mask, use_cache=False, **kw))
        assert torch.equal(cached[0, 3:], model.generate(ids[:1, 3:], **kw)[0])


def test_engine_fans_out_and_drops_rows_of_a_hybrid_cache():
    from hf_nanogpt.engine import ChatTokens, Engine

    torch.manual_seed(0)
    model = randomised(NanoGPTForCausalLM(config())).eval()
    engine = Engine(model, ChatTokens(assistant_end=V - 1))
    rows = engine.generate_batch([5, 6, 7, 8], num_samples=3, max_tokens=6, temperature=0.0)[0]
    assert len(rows) == 3 and rows[0] == rows[1] == rows[2] and rows[0]  # one prefill fanned out to 3 rows
    with torch.no_grad():
        ref = model.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert rows[0] == ref[0, 4:4 + len(rows[0])].tolist()


def test_config_checks_and_optimizer_groups():
    with pytest.raises(ValueError, match="at least one attention layer"):
        config(window_pattern=None, layer_types=["linear_attention"] * 3)
    with pytest.raises(ValueError, match="mamba_head_dim"):
        config(mamba_head_dim=7)
    with pytest.raises(ValueError, match="'M' \\(Mamba-2\\)"):
        config(window_pattern="MXL")
    cfg = config(window_pattern="MMML", num_hidden_layers=8, value_embeddings=True)
    assert cfg.layer_types == ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + [
        "full_attention"]
    assert cfg.value_embedding_layers == [3, 7]  # only attention layers take value embeddings
    groups = {k: {n.split(".")[-1] if "conv1d" not in n else "conv1d." + n.split(".")[-1] for n, _ in v}
              for k, v in classify_parameters(NanoGPTForCausalLM(config())).items()}
    assert groups["ssm"] == {"A_log", "D", "dt_bias", "conv1d.weight", "conv1d.bias", "weight"}  # + gated norm
    assert {"in_proj", "out_proj"} <= {n.split(".")[-2] for n, _ in classify_parameters(
        NanoGPTForCausalLM(config()))["matrix"]}


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = randomised(NanoGPTForCausalLM(config(num_experts=4))).train()
    ids = torch.randint(0, V, (2, 9))
    model(ids, labels=ids).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, labels=ids).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.slow
def test_hybrid_moe_remote_code_loads_in_a_fresh_process_without_the_package(tmp_path):
    import os
    import subprocess
    import sys
    import textwrap

    torch.manual_seed(0)
    model = randomised(NanoGPTForCausalLM(config(num_experts=4, num_shared_experts=1, pad_token_id=0))).eval()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    assert {"mamba_nanogpt.py", "moe_nanogpt.py", "cache_nanogpt.py"} <= {p.name for p in model_dir.iterdir()}
    ids = torch.randint(1, V, (2, 10))
    torch.save({"ids": ids, "logits": model(ids).logits}, tmp_path / "ref.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        sys.modules["hf_nanogpt"] = None  # the classes must come from the folder's remote code
        from transformers import AutoModelForCausalLM
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        lm = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert "transformers_modules" in type(lm).__module__, type(lm).__module__
        torch.testing.assert_close(lm(ref["ids"]).logits, ref["logits"], rtol=0, atol=0)
        kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        out = lm.generate(ref["ids"][:, :4], **kw)
        assert torch.equal(out, lm.generate(ref["ids"][:, :4], use_cache=False, **kw))
        print("REMOTE_OK")
    """)
    env = {**os.environ, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "REMOTE_OK" in proc.stdout, proc.stderr[-3000:]
