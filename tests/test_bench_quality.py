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
