"""Muon + AdamW: parameter groups, nanochat's golden Muon steps, torch's optimizers, Lookahead, FSDP2 shards."""

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.optim import (
    Lookahead,
    MuonAdamW,
    apply_schedule,
    build_optimizer,
    classify_parameters,
    cpu_has_bf16_matmul,
    newton_schulz_dtype,
    polar_express,
    zeropower_via_newtonschulz,
)


def tiny(**kw):
    base = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32)
    base.update(kw)
    torch.manual_seed(0)
    return NanoGPTForCausalLM(NanoGPTConfig(**base))


def _role(module: nn.Module, role: str) -> nn.Module:
    module.init_role = role
    return module


class NanochatShaped(nn.Module):
    """The parameter names and roles of nanochat master's GPT as the model will name them (d=24, 2 layers,
    2 kv heads): value embeddings, value-embedding gates, smear gate, smear/backout lambdas."""

    def __init__(self, d: int = 24, n_kv: int = 2, vocab: int = 64):
        super().__init__()
        self.config = NanoGPTConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=2, num_attention_heads=2)
        self.model = nn.Module()
        self.model.embed_tokens = _role(nn.Embedding(vocab, d), "token_embedding")
        self.model.value_embeds = nn.ModuleDict({"1": _role(nn.Embedding(vocab, n_kv * 12), "value_embedding")})
        self.model.smear_gate = _role(nn.Linear(24, 1, bias=False), "smear_gate")
        self.model.layers = nn.ModuleList()
        for i in range(2):
            block = nn.Module()
            block.self_attn = nn.Module()
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                setattr(block.self_attn, name, nn.Linear(d, d, bias=False))
            if i == 1:
                block.self_attn.ve_gate = _role(nn.Linear(12, n_kv, bias=False), "ve_gate")
            block.mlp = nn.Module()
            block.mlp.up_proj, block.mlp.down_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)
            self.model.layers.append(block)
        for name, value in (("smear_lambda", torch.zeros(1)), ("backout_lambda", torch.full((1,), 0.2)),
                            ("resid_lambdas", torch.ones(2)), ("x0_lambdas", torch.full((2,), 0.1))):
            setattr(self.model, name, nn.Parameter(value))
        self.lm_head = _role(nn.Linear(d, vocab, bias=False), "lm_head")


def test_every_parameter_lands_in_exactly_one_group():
    model = tiny()
    groups = classify_parameters(model)
    names = {k: [n for n, _ in v] for k, v in groups.items()}
    assert names["embedding"] == ["model.embed_tokens.weight"]
    assert names["lm_head"] == ["lm_head.weight"]
    assert names["resid"] == ["model.resid_lambdas"] and names["x0"] == ["model.x0_lambdas"]
    assert len(names["matrix"]) == 2 * 6 and all(".layers." in n for n in names["matrix"])
    assert sum(map(len, names.values())) == len(list(model.parameters()))


def test_nanochat_master_groups_and_hyperparameters():
    model = NanochatShaped()
    names = {k: sorted(n for n, _ in v) for k, v in classify_parameters(model).items()}
    assert names["value_embedding"] == ["model.value_embeds.1.weight"]
    assert names["smear"] == ["model.backout_lambda", "model.smear_gate.weight", "model.smear_lambda"]
    assert "model.layers.1.self_attn.ve_gate.weight" in names["matrix"] and len(names["matrix"]) == 13
    opt = build_optimizer(model, embedding_lr=0.3, unembedding_lr=0.008, scalar_lr=0.5, matrix_lr=0.02,
                          weight_decay=0.28, batch_lr_scale=2.0)
    g = {x["name"]: x for x in opt.param_groups}
    s = (24 / 768) ** -0.5
    expected = {  # name: (lr, betas, weight decay), the table with lrs x batch_lr_scale (not the smear lr)
        "lm_head": (0.008 * s * 2, (0.8, 0.96), 0.01), "embedding": (0.3 * s * 2, (0.8, 0.995), 0.001),
        "value_embedding": (0.3 * s * 0.5 * 2, (0.8, 0.995), 0.01), "resid": (0.5 * 0.01 * 2, (0.8, 0.95), 0.05),
        "x0": (0.5 * 2, (0.96, 0.95), 0.0), "smear": (0.2, (0.8, 0.95), 0.0)}
    for name, (lr, betas, wd) in expected.items():
        assert g[name]["kind"] == "adamw" and g[name]["eps"] == 1e-10, name
        assert (g[name]["lr"], g[name]["betas"], g[name]["weight_decay"]) == (pytest.approx(lr), betas, wd), name
    m = g["matrix"]
    assert (m["kind"], m["variant"], m["beta2"], m["ns_steps"], m["weight_decay"]) == ("muon", "nanochat", 0.9, 5,
                                                                                          0.28)
    assert m["lr"] == pytest.approx(0.04)
    assert sum(len(x["params"]) for x in opt.param_groups) == len(list(model.parameters()))


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
    with torch.device("meta"):  # shapes are all the groups need
        model = tiny(hidden_size=3072, num_attention_heads=24)
    opt = build_optimizer(model, embedding_lr=0.2, matrix_lr=0.02)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["embedding"] == pytest.approx(0.2 * 0.5)  # (3072 / 768) ** -0.5 = 0.5
    assert lrs["matrix"] == pytest.approx(0.02)  # Muon: width-independent (shape factor applied per matrix)


def test_newton_schulz_and_polar_express_orthogonalise():
    torch.manual_seed(0)
    g = torch.randn(3, 16, 48)
    for dtype in (torch.float32, torch.bfloat16):
        for o in (zeropower_via_newtonschulz(g, dtype=dtype), polar_express(g, dtype=dtype),
                  polar_express(g.mT, dtype=dtype).mT):
            assert o.dtype == dtype
            sv = torch.linalg.svdvals(o.float())
            assert sv.min() > 0.5 and sv.max() < 1.5  # both land the singular values near 1
    # batched == one at a time
    torch.testing.assert_close(zeropower_via_newtonschulz(g)[1], zeropower_via_newtonschulz(g[1]))


def test_orthogonalisation_runs_in_bf16_where_the_hardware_multiplies_bf16():
    assert newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16  # nanochat's and torch's precision
    expected = torch.bfloat16 if cpu_has_bf16_matmul() else torch.float32
    assert newton_schulz_dtype(torch.device("cpu")) == expected
    assert MuonAdamW([dict(kind="muon", params=[nn.Parameter(torch.zeros(4, 4))])], ns_dtype=torch.float32).ns_dtype \
        == torch.float32


@pytest.mark.parametrize("ns_dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_muon_matches_nanochat_golden_steps(shared_data, ns_dtype, tol):
    """Three steps of nanochat master's Muon per shape: parameters, updates and both buffers within 1e-5 when
    Polar Express runs in float32 as the golden run did; in bf16, the precision nanochat itself trains with,
    within bf16's rounding (5e-2 of the update; 2.6% measured at worst)."""
    import json

    from safetensors.torch import load_file

    gold = load_file(shared_data / "nanochat_golden" / "muon_steps.safetensors")
    hp = json.loads((shared_data / "nanochat_golden" / "muon_steps.json").read_text())
    for shape in ("64x64", "64x256", "256x64"):
        rows, cols = map(int, shape.split("x"))
        p = nn.Parameter(gold[f"{shape}.param0"].clone())
        # the golden lr is the step's; our group lr is per square matrix (x max(1, R/C)^0.5 inside)
        opt = MuonAdamW([dict(kind="muon", params=[p], lr=hp["lr"] / math.sqrt(max(1, rows / cols)),
                              momentum=hp["momentum"], weight_decay=hp["wd"], beta2=hp["beta2"],
                              ns_steps=hp["ns_steps"])], variant="nanochat", ns_dtype=ns_dtype)
        for i in range(hp["steps"]):
            before = p.detach().clone()
            p.grad = gold[f"{shape}.grad{i}"].clone()
            opt.step()
            ref = gold[f"{shape}.param{i + 1}"]
            assert (p.detach() - ref).norm() / ref.norm() < tol, (shape, i)
            ref_update = ref - gold[f"{shape}.param{i}"]
            assert ((p.detach() - before) - ref_update).norm() / ref_update.norm() < tol, (shape, i)
        state = opt.state[p]
        for buf in ("momentum_buffer", "second_momentum_buffer"):
            ref = gold[f"{shape}.{buf}"]
            assert state[buf].shape == ref.shape and (state[buf] - ref).norm() / ref.norm() < tol, (shape, buf)


def test_keller_variant_matches_torch_muon():
    torch.manual_seed(0)
    shapes = [(24, 8), (8, 24), (16, 16), (16, 16)]
    ours_p = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref_p = [torch.nn.Parameter(p.detach().clone()) for p in ours_p]
    # torch's Muon runs Newton-Schulz in bfloat16 on every device; ours where the hardware multiplies bf16
    ours = MuonAdamW([dict(kind="muon", params=ours_p, lr=0.02, weight_decay=0.1)], momentum=0.9,
                     variant="keller", ns_dtype=torch.bfloat16)
    ref = torch.optim.Muon(ref_p, lr=0.02, weight_decay=0.1, momentum=0.9, adjust_lr_fn="original")
    nanochat = MuonAdamW([dict(kind="muon", params=[torch.nn.Parameter(p.detach().clone()) for p in ours_p],
                               lr=0.02, weight_decay=0.1)], momentum=0.9)
    for step in range(3):
        grads = [torch.randn(s) for s in shapes]
        for p, q, r, g in zip(ours_p, ref_p, nanochat.param_groups[0]["params"], grads):
            p.grad, q.grad, r.grad = g.clone(), g.clone(), g.clone()
        ours.step()
        ref.step()
        nanochat.step()
        for p, q in zip(ours_p, ref_p):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"step {step}")
    # the two variants are different rules (the nanochat one is not torch's)
    assert not torch.allclose(ours_p[0], nanochat.param_groups[0]["params"][0], atol=1e-4)


def test_cautious_weight_decay_only_where_update_and_weight_agree():
    p = nn.Parameter(torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
    opt = MuonAdamW([dict(kind="muon", params=[p], lr=1e-9, weight_decay=1e8)])
    p.grad = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # direction sign = +, so decay hits the positive weights only
    opt.step()
    assert p[0, 0].item() < 0.95 and p[0, 1].item() == pytest.approx(-1.0, abs=1e-6)


def test_nanogpt_optimizer_is_adamw_everywhere_with_decay_on_2d_tensors():
    """optimizer=adamw (nanoGPT's configure_optimizers): one AdamW rule at the recipe betas and torch's eps,
    weight decay on every 2-D tensor (matrices, embeddings) and none on the vectors; a step equals
    torch.optim.AdamW over the same two decay groups."""
    def gpt2():
        torch.manual_seed(0)
        return NanoGPTForCausalLM(NanoGPTConfig.gpt2(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, max_position_embeddings=32))

    model = gpt2()
    opt = build_optimizer(model, matrix_optimizer="adamw", matrix_lr=1e-3, embedding_lr=1e-3 * (32 / 768) ** 0.5,
                          scalar_lr=0.1, weight_decay=0.1, adamw_betas=(0.9, 0.99))
    for g in opt.param_groups:
        assert g["kind"] == "adamw" and g["betas"] == (0.9, 0.99) and g["eps"] == 1e-8, g["name"]
        assert g["lr"] == pytest.approx(1e-3), g["name"]
        assert g["weight_decay"] == (0.1 if all(p.ndim >= 2 for p in g["params"]) else 0.0), g["name"]
    assert {g["name"] for g in opt.param_groups if g["weight_decay"]} >= {"matrix", "embedding"}
    twin = gpt2()
    decay = [p for p in twin.parameters() if p.ndim >= 2]
    ref = torch.optim.AdamW([dict(params=decay, weight_decay=0.1),
                             dict(params=[p for p in twin.parameters() if p.ndim < 2], weight_decay=0.0)],
                            lr=1e-3, betas=(0.9, 0.99), eps=1e-8)
    x = torch.randint(0, 64, (2, 17))
    for m, o in ((model, opt), (twin, ref)):
        m(input_ids=x[:, :-1], shift_labels=x[:, 1:], use_cache=False).loss.backward()
        o.step()
    for (n, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=n)


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


def test_muon_rejects_bad_groups():
    with pytest.raises(ValueError, match="neither matrices nor stacks of matrices"):
        MuonAdamW([dict(kind="muon", name="bad", params=[torch.nn.Parameter(torch.zeros(3))])])
    with pytest.raises(ValueError, match="kind"):
        MuonAdamW([dict(params=[torch.nn.Parameter(torch.zeros(3))])])
    with pytest.raises(ValueError, match="variant='adam'"):
        MuonAdamW([dict(kind="muon", name="m", variant="adam", params=[torch.nn.Parameter(torch.zeros(3, 3))])])


def test_optimizer_state_round_trips():
    model = tiny()
    opt = build_optimizer(model)
    model(torch.randint(0, 64, (2, 8)), labels=torch.randint(0, 64, (2, 8))).loss.backward()
    opt.step()
    again = build_optimizer(model)
    again.load_state_dict(opt.state_dict())
    for g1, g2 in zip(opt.param_groups, again.param_groups):
        assert g1["lr"] == g2["lr"] and g1["kind"] == g2["kind"]
    p = next(iter(opt.param_groups[0]["params"]))  # the matrix group's first: both Muon buffers
    q = again.param_groups[0]["params"][0]
    for key in ("momentum_buffer", "second_momentum_buffer"):
        assert torch.equal(opt.state[p][key], again.state[q][key])


def test_apply_schedule_sets_lr_momentum_and_muon_weight_decay():
    opt = build_optimizer(tiny(), weight_decay=0.3)
    apply_schedule(opt, 0.5, momentum=0.9, weight_decay=0.1)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.5 * g["initial_lr"])
        if g["kind"] == "muon":
            assert (g["momentum"], g["weight_decay"]) == (0.9, 0.1)
        else:
            assert g["weight_decay"] in (0.0, 0.001, 0.01, 0.05)  # the AdamW table's, untouched


# ----------------------------------------------------------------------------- Lookahead


def _train(opt, model, steps: int, seed: int = 1) -> list[float]:
    torch.manual_seed(seed)
    losses = []
    for _ in range(steps):
        ids = torch.randint(0, 64, (2, 8))
        loss = model(ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_lookahead_syncs_every_k_steps_and_changes_the_trajectory():
    plain, wrapped = tiny(), tiny()
    opt = build_optimizer(wrapped, lookahead_k=3, lookahead_alpha=0.5)
    assert isinstance(opt, Lookahead) and isinstance(opt.optimizer, MuonAdamW)
    start = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    # by hand: after 3 inner steps the weights are start + 0.5 (fast - start)
    inner = build_optimizer(plain)
    _train(inner, plain, 3)
    fast = {n: p.detach().clone() for n, p in plain.named_parameters()}
    _train(opt, wrapped, 3)
    for n, p in wrapped.named_parameters():
        torch.testing.assert_close(p.detach(), start[n] + 0.5 * (fast[n] - start[n]), rtol=1e-5, atol=1e-6, msg=n)
        torch.testing.assert_close(opt.slow[p], p.detach(), rtol=0, atol=0)
    assert all(g["lookahead_step"] == 3 for g in opt.param_groups)
    # alpha = 1 is the inner optimizer exactly
    a, b = tiny(), tiny()
    la, lb = _train(build_optimizer(a), a, 4), _train(build_optimizer(b, lookahead_k=2, lookahead_alpha=1.0), b, 4)
    assert la == lb


def test_lookahead_state_dict_holds_slow_weights_and_resumes_exactly():
    model = tiny()
    opt = build_optimizer(model, lookahead_k=3)
    _train(opt, model, 4)  # mid-cycle: slow weights differ from the fast ones
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    slow = [s["lookahead_slow"] for s in sd["state"].values() if "lookahead_slow" in s]
    assert len(slow) == len(list(model.parameters()))
    assert not any(torch.equal(s, p.detach()) for s, p in zip(slow, model.parameters()))
    import io

    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    sd = torch.load(buffer, weights_only=True)  # plain tensors and numbers: no unpickling of code
    straight = _train(opt, model, 4, seed=2)
    resumed_model = tiny()
    resumed_model.load_state_dict(saved_model)
    again = build_optimizer(resumed_model, lookahead_k=3)
    again.load_state_dict(sd)
    assert _train(again, resumed_model, 4, seed=2) == straight
    for (n, p), q in zip(model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(p, q), n


def test_lookahead_rejects_bad_settings():
    with pytest.raises(ValueError, match="k=0"):
        Lookahead(build_optimizer(tiny()), k=0)
    with pytest.raises(ValueError, match="alpha=1.5"):
        Lookahead(build_optimizer(tiny()), k=5, alpha=1.5)


# ----------------------------------------------------------------------------- FSDP2 shards


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_worker(rank: int, world: int, port: int, ref: dict, out_path: str):
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        model = tiny(**ref["arch"])
        model.load_state_dict(ref["init"])
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = build_optimizer(model, matrix_lr=0.05, weight_decay=0.1, **ref["optim"])
        for batch in ref["batches"]:
            model(batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
        full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                for k, v in model.state_dict().items()}
        # the checkpoint path of hf_nanogpt.checkpointing: full optimizer state gathered, then scattered back
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        osd = get_optimizer_state_dict(model, opt, options=options)  # full on rank 0, empty elsewhere
        if rank == 0:
            torch.save(osd, out_path + ".optim")
        dist.barrier()
        osd = torch.load(out_path + ".optim", weights_only=True)  # every rank reads the file, as a resume does
        again = build_optimizer(model, matrix_lr=0.05, weight_decay=0.1, **ref["optim"])
        set_optimizer_state_dict(model, again, optim_state_dict=osd, options=StateDictOptions(full_state_dict=True))
        for p, q in zip(opt.param_groups[0]["params"], again.param_groups[0]["params"]):
            for key, value in opt.state[p].items():  # Muon momentum (a shard) and NorMuon's second moment (whole)
                assert torch.equal(value.to_local() if hasattr(value, "to_local") else value,
                                   (lambda v: v.to_local() if hasattr(v, "to_local") else v)(again.state[q][key]))
        if rank == 0:
            torch.save({"weights": full, "optim": {k: v for k, v in osd["state"].items()}}, out_path)
        if isinstance(opt, Lookahead):
            for p in model.parameters():  # slow weights: sharded like the parameter, restored exactly
                assert torch.equal(opt.slow[p].to_local(), again.slow[p].to_local())
    finally:
        dist.destroy_process_group()


# a Mamba-2 + attention model with MoE MLPs: 3-D experts sharded by expert, Muon gathering them whole
MOE_HYBRID = dict(window_pattern="ML", num_experts=4, num_shared_experts=1, mamba_head_dim=16, mamba_state_size=8,
                  init_scheme="gpt2")


@pytest.mark.slow
# Polar Express in float32: in bf16 a 1e-7 difference between the sharded and whole paths (torch's fused AdamW
# kernel here, its per-tensor loop on shards) can flip a bf16 rounding, and 3 steps of a tiny model amplify it
@pytest.mark.parametrize("optim,arch", [({"ns_dtype": torch.float32}, {}),
                                        ({"lookahead_k": 2, "ns_dtype": torch.float32}, {}),
                                        ({"ns_dtype": torch.float32}, MOE_HYBRID)],
                         ids=["muon_adamw", "lookahead", "moe_hybrid"])
def test_fsdp2_sharded_update_and_checkpoint_match_unsharded(tmp_path, optim, arch):
    model = tiny(**arch)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    batches = [torch.randint(0, 64, (2, 16)) for _ in range(3)]  # 3 steps: Lookahead's k=2 is mid-cycle at the end
    opt = build_optimizer(model, matrix_lr=0.05, weight_decay=0.1, **optim)
    for batch in batches:
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    expected = model.state_dict()

    out_path = str(tmp_path / "rank0.pt")
    mp.start_processes(_fsdp_worker, args=(2, _free_port(), dict(init=init, batches=batches, optim=optim, arch=arch),
                                           out_path),
                       nprocs=2, join=True, start_method="spawn")
    got = torch.load(out_path, weights_only=True)
    for key, value in expected.items():
        # each rank sees its own micro-batch copy here (same data), so FSDP's gradient mean equals the
        # single-process gradient; Muon must orthogonalise the whole matrix, not each shard
        torch.testing.assert_close(got["weights"][key], value, rtol=1e-4, atol=1e-4, msg=key)
    names = dict(model.named_parameters())
    for name, state in got["optim"].items():  # the gathered checkpoint state equals the unsharded run's
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim:
                ref = opt.slow[names[name]] if key == "lookahead_slow" else opt.state[names[name]][key]
                torch.testing.assert_close(value, ref, rtol=1e-4, atol=1e-4, msg=f"{name} {key}")
    if optim.get("lookahead_k"):
        assert any("lookahead_slow" in state for state in got["optim"].values())
