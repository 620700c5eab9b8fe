"""Muon + AdamW: parameter groups, agreement with torch's optimizers, schedules, FSDP2 shards."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.optim import (
    MuonAdamW,
    apply_schedule,
    build_optimizer,
    classify_parameters,
    lr_multiplier,
    muon_momentum,
    zeropower_via_newtonschulz,
)


def tiny(**kw):
    base = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32)
    base.update(kw)
    torch.manual_seed(0)
    return NanoGPTForCausalLM(NanoGPTConfig(**base))


def test_every_parameter_lands_in_exactly_one_group():
    model = tiny()
    groups = classify_parameters(model)
    names = {k: [n for n, _ in v] for k, v in groups.items()}
    assert names["embedding"] == ["model.embed_tokens.weight"]
    assert names["lm_head"] == ["lm_head.weight"]
    assert names["scalar"] == ["model.resid_lambdas"] and names["x0"] == ["model.x0_lambdas"]
    assert len(names["matrix"]) == 2 * 6 and all(".layers." in n for n in names["matrix"])
    assert sum(map(len, names.values())) == len(list(model.parameters()))


def test_tied_gpt2_family_groups():
    model = tiny(**{k: v for k, v in NanoGPTConfig.gpt2().to_dict().items() if k in (
        "position_embedding", "norm_type", "bias", "tie_word_embeddings", "residual_scalars", "hidden_act")})
    groups = classify_parameters(model)
    assert groups["lm_head"] == []  # tied: the head is the embedding, optimised once
    assert {n for n, _ in groups["embedding"]} == {"model.embed_tokens.weight", "model.embed_positions.weight"}
    assert all(p.ndim == 1 for _, p in groups["scalar"])  # LayerNorm weights/biases and Linear biases
    opt = build_optimizer(model)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_lora_adapters_get_their_own_group():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny(), LoraConfig(r=4, lora_alpha=8))  # default targets registered for nanogpt
    groups = classify_parameters(model)
    assert groups["adapter"] and not groups["matrix"] and not groups["embedding"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(groups["adapter"]) == len(trainable)


def test_learning_rates_scale_with_width():
    opt = build_optimizer(tiny(hidden_size=3072, num_attention_heads=24), embedding_lr=0.2, matrix_lr=0.02)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["embedding"] == pytest.approx(0.2 * 0.5)  # (3072 / 768) ** -0.5 = 0.5
    assert lrs["matrix"] == pytest.approx(0.02)  # Muon: width-independent (shape factor applied per matrix)


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    g = torch.randn(3, 16, 48)
    o = zeropower_via_newtonschulz(g).float()
    sv = torch.linalg.svdvals(o)
    assert sv.min() > 0.5 and sv.max() < 1.5  # quintic NS lands singular values in ~(0.7, 1.2)
    # batched == one at a time
    torch.testing.assert_close(o[1], zeropower_via_newtonschulz(g[1]).float())


def test_muon_step_matches_torch_muon():
    torch.manual_seed(0)
    shapes = [(24, 8), (8, 24), (16, 16), (16, 16)]
    ours_p = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    # torch's Muon runs Newton-Schulz in bfloat16 on every device; ours does on GPUs (float32 on CPUs)
    ours = MuonAdamW([dict(kind="muon", params=ours_p, lr=0.02, weight_decay=0.1)], momentum=0.9,
                     ns_dtype=torch.bfloat16)
    ref = torch.optim.Muon(ref_p, lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="original")
    for step in range(3):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours_p, ref_p, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        for p, q in zip(ours_p, ref_p):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"step {step}")


def test_adamw_step_matches_torch_adamw():
    torch.manual_seed(0)
    ours_p = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 4))]
    ref_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    ours = MuonAdamW([dict(kind="adamw", params=ours_p, lr=0.01, weight_decay=0.05)], betas=(0.8, 0.95), eps=1e-10)
    ref = torch.optim.AdamW(ref_p, lr=0.01, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.05)
    for _ in range(4):
        for p, q in zip(ours_p, ref_p):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="non-2-D"):
        MuonAdamW([dict(kind="muon", name="bad", params=[torch.nn.Parameter(torch.zeros(3))])])
    with pytest.raises(ValueError, match="kind"):
        MuonAdamW([dict(params=[torch.nn.Parameter(torch.zeros(3))])])


def test_optimizer_state_round_trips():
    model = tiny()
    opt = build_optimizer(model)
    model(torch.randint(0, 64, (2, 8)), labels=torch.randint(0, 64, (2, 8))).loss.backward()
    opt.step()
    again = build_optimizer(model)
    again.load_state_dict(opt.state_dict())
    for g1, g2 in zip(opt.param_groups, again.param_groups):
        assert g1["lr"] == g2["lr"] and g1["kind"] == g2["kind"]
    some = next(iter(opt.state.values()))
    assert any(torch.equal(some.get("momentum_buffer", some.get("exp_avg")),
                           s.get("momentum_buffer", s.get("exp_avg"))) for s in again.state.values())


@pytest.mark.parametrize("schedule", ["wsd", "cosine", "constant"])
def test_lr_schedules(schedule):
    n = 100
    mult = [lr_multiplier(s, n, schedule, warmup_ratio=0.1, warmdown_ratio=0.3, final_lr_frac=0.1) for s in range(n)]
    assert mult[0] == pytest.approx(0.1) and mult[9] == pytest.approx(1.0)  # linear warmup over 10 steps
    assert max(mult) == pytest.approx(1.0)
    if schedule == "constant":
        assert mult[-1] == 1.0
    else:
        assert mult[-1] < 0.2 and all(a >= b - 1e-12 for a, b in zip(mult[10:], mult[11:]))  # non-increasing
    if schedule == "wsd":
        assert mult[70] == 1.0 and mult[71] < 1.0  # flat until the last 30%


def test_muon_momentum_warmup_and_apply_schedule():
    assert muon_momentum(0) == pytest.approx(0.85) and muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(10_000) == pytest.approx(0.95)
    opt = build_optimizer(tiny())
    apply_schedule(opt, 0.5, momentum=0.9)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.5 * g["initial_lr"])
        assert g["kind"] != "muon" or g["momentum"] == 0.9


# ----------------------------------------------------------------------------- FSDP2 shards


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_worker(rank: int, world: int, port: int, ref: dict, out_path: str):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        model = tiny()
        model.load_state_dict(ref["init"])
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = build_optimizer(model, matrix_lr=0.05, weight_decay=0.1)
        for batch in ref["batches"]:
            model(batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
        full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                for k, v in model.state_dict().items()}
        if rank == 0:
            torch.save(full, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_sharded_update_matches_unsharded(tmp_path):
    model = tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    batches = [torch.randint(0, 64, (2, 16)) for _ in range(2)]
    opt = build_optimizer(model, matrix_lr=0.05, weight_decay=0.1)
    for batch in batches:
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    expected = model.state_dict()

    out_path = str(tmp_path / "rank0.pt")
    mp.start_processes(_fsdp_worker, args=(2, _free_port(), dict(init=init, batches=batches), out_path),
                       nprocs=2, join=True, start_method="spawn")
    got = torch.load(out_path)
    for key, value in expected.items():
        # each rank sees its own micro-batch copy here (same data), so FSDP's gradient mean equals the
        # single-process gradient; Muon must orthogonalise the whole matrix, not each shard
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-4, msg=key)
