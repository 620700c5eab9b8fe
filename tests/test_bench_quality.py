"""bench.py quality: the held-out measure (bits per byte in non-overlapping windows) and the command line."""

import math

import pytest
import torch

from hf_nanogpt.benchmarks import quality
from hf_nanogpt.configuration_nanogpt import NanoGPTConfig
from hf_nanogpt.modeling_nanogpt import NanoGPTForCausalLM
from hf_nanogpt.tokenization import train_tokenizer


def test_windowed_bpb_scores_every_character_once_within_its_own_window():
    tok = train_tokenizer(iter(["a"]), vocab_size=265)  # no merges: one byte per token
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig.from_depth(1, aspect_ratio=32, head_dim=16, vocab_size=len(tok),
                                                        max_position_embeddings=16)).eval()
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler"  # 63 bytes: 62 targets
    got = quality.windowed_bpb(model, tok, text, window=8, batch=3)
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(text.encode())
    nats = 0.0
    for start in range(0, len(ids) - 1, 8):  # one window at a time: 7 full windows of 8 and a tail of 6
        x, y = ids[start:start + 8], ids[start + 1:start + 9]
        x = x[:len(y)]
        with torch.no_grad():
            logits = model(input_ids=x[None], use_cache=False).logits[0].float()
        nats += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    assert got == pytest.approx(nats / (math.log(2) * (len(ids) - 1)), rel=1e-5)


def test_quality_refuses_a_missing_text(tmp_path):
    with pytest.raises(SystemExit):
        quality.parse_args(["--text", str(tmp_path / "nosuch.txt")])


def test_nanogpt_floor_counts_the_flops_of_nanogpts_run():
    """The floor's N is the parameter count of nanoGPT's model (the GPT-2 preset at its sizes, no biases, tied
    head, without the position table: nanoGPT prints 0.80M), and its evaluations add a forward third per token."""
    run = quality.NANOGPT_RUN
    cfg = NanoGPTConfig.from_depth(run["n_layer"], aspect_ratio=run["n_embd"] // run["n_layer"], head_dim=32,
                                   vocab_size=run["vocab_size"], preset="gpt2", bias=False, pad_vocab_size_to=1,
                                   max_position_embeddings=run["block_size"])
    model = NanoGPTForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters()) - model.model.embed_positions.weight.numel()
    assert round(n / 1e6, 2) == 0.80
    per_token = 6 * n + 12 * run["n_layer"] * run["n_embd"] * run["block_size"]
    trained = run["max_iters"] * run["batch_size"] * run["block_size"]
    evaluated = 9 * 2 * run["eval_iters"] * run["batch_size"] * run["block_size"]  # steps 0, 250, ..., 2000
    assert quality.nanogpt_run_flops() == pytest.approx(per_token * (trained + evaluated / 3))
    assert quality.nanogpt_floor(200e9) == pytest.approx(quality.nanogpt_run_flops() / 200e9)
    # without evaluations the floor is the training alone, less
    assert quality.nanogpt_run_flops({**run, "eval_iters": 0}) == pytest.approx(per_token * trained)


def test_plain_nanogpt_computes_nanogpts_own_logits(shared_data):
    """The model `bench.py quality` times as nanoGPT's run is nanoGPT's model: loaded from the golden nanoGPT
    checkpoint (biases, perturbed LayerNorms), it gives the logits nanoGPT's own model.py computed."""
    from safetensors.torch import load_file

    from hf_nanogpt.benchmarks.plain_nanogpt import PlainGPT

    folder = shared_data / "nanogpt_golden" / "random_bias"
    ckpt = torch.load(folder / "ckpt.pt", map_location="cpu", weights_only=True)
    a = ckpt["model_args"]
    model = PlainGPT(a["n_layer"], a["n_embd"], a["n_head"], a["block_size"], a["vocab_size"], bias=a["bias"])
    names = {"transformer.": "", "attn.c_attn": "c_attn", "attn.c_proj": "attn_proj", "mlp.c_fc": "c_fc",
             "mlp.c_proj": "mlp_proj"}
    state = {}
    for key, value in ckpt["model"].items():
        for old, new in names.items():
            key = key.replace(old, new)
        state[key] = value
    model.load_state_dict(state, strict=True)
    golden = load_file(folder / "golden.safetensors")
    with torch.no_grad():
        logits = model.eval()(golden["input_ids"])
    # matches to 2e-7; tight, since the tanh GELU on these small random weights is only 2.3e-6 off
    torch.testing.assert_close(logits, golden["logits"], rtol=0, atol=1e-6)


def test_plain_nanogpt_times_the_cpu_run_at_its_sizes():
    """At the run's sizes the plain model has nanoGPT's 0.80M parameters (the floor's N), and the estimate is
    the run's 2000 steps and 9 x 2 x 20 evaluation batches at the measured times."""
    from hf_nanogpt.benchmarks.plain_nanogpt import time_nanogpt_run

    run = quality.NANOGPT_RUN
    t = time_nanogpt_run(run, steps=2, warmup=1)
    assert round(t["parameters"] / 1e6, 2) == 0.80
    per_token = 6 * t["parameters"] + 12 * run["n_layer"] * run["n_embd"] * run["block_size"]
    assert quality.nanogpt_run_flops() == pytest.approx(per_token * run["batch_size"] * run["block_size"]
                                                        * (run["max_iters"] + 9 * 2 * run["eval_iters"] / 3))
    assert t["step_s"] > 0 and t["eval_batch_s"] > 0
    assert t["estimate_s"] == pytest.approx(2000 * t["step_s"] + 360 * t["eval_batch_s"])


def test_quality_verdict_needs_ours_faster_than_nanogpts_timed_run():
    args = quality.parse_args(["--text", __file__])
    row = {"parameters": 1, "steps": 1, "tokens": 1, "train_time_s": 40.0, "bpb_64": 2.4, "val_bpb": 2.3}
    results = {args.recipes[0]: {**row, "wall_s": 50.0}, args.recipes[1]: {**row, "wall_s": 100.0}}
    plain = {"threads": 2, "step_s": 0.06, "eval_batch_s": 0.02, "steps_timed": 200}
    assert quality.format_report(results, args, 300e9, {**plain, "estimate_s": 120.0}).endswith("targets met")
    slower = quality.format_report(results, args, 300e9, {**plain, "estimate_s": 45.0})
    assert "ours / that: 1.11x" in slower and slower.endswith("targets NOT met")
    assert "not measured" in quality.format_report(results, args, 300e9, None)
    results[args.recipes[0]]["bpb_64"] = 2.46  # the windows' bpb misses the target
    assert quality.format_report(results, args, 300e9, {**plain, "estimate_s": 120.0}).endswith("targets NOT met")
