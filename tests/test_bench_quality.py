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
