"""Bits per byte (hf_nanogpt.evaluation.bpb) against a hand computation on real tokenized text."""

import math

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.evaluation.bpb import evaluate_bpb, evaluate_val_loss
from hf_nanogpt.tokenization import token_bytes


@pytest.fixture(scope="module")
def setup(tiny_tokenizer, shared_data):
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=256)).eval()
    text = (shared_data / "corpus" / "tinyshakespeare.txt").read_text()[:20000]
    ids = tiny_tokenizer(text)["input_ids"]
    B, T = 4, 64
    rows = torch.tensor(ids[: B * (T + 1)]).view(B, T + 1)
    rows[:, 0] = tiny_tokenizer.bos_token_id  # BOS-aligned rows, as the packer makes them
    rows[1, 30] = tiny_tokenizer.bos_token_id  # a document boundary inside a row: a special target
    batch = {"input_ids": rows[:, :-1].clone(), "shift_labels": rows[:, 1:].clone()}
    batch["shift_labels"][2, :10] = -100  # ignored targets
    return model, token_bytes(tiny_tokenizer), batch


def _sums_by_hand(model, tb, batch):
    """(nats, bytes, tokens) over the targets that are neither ignored nor special, one by one."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"]).logits.double(), -1)
    nats, nbytes, tokens = 0.0, 0, 0
    B, T = batch["input_ids"].shape
    for b in range(B):
        for t in range(T):
            y = int(batch["shift_labels"][b, t])
            if y < 0 or tb[y] == 0:
                continue
            nats -= logp[b, t, y].item()
            nbytes += int(tb[y])
            tokens += 1
    return nats, nbytes, tokens


def _by_hand(model, tb, batch):
    nats, nbytes, _ = _sums_by_hand(model, tb, batch)
    return nats / (math.log(2) * nbytes)


def test_bpb_matches_hand_computation(setup):
    model, tb, batch = setup
    assert tb[batch["shift_labels"][1, 29]] == 0  # the in-row BOS target is special
    got = evaluate_bpb(model, [batch], tb)
    assert got == pytest.approx(_by_hand(model, tb, batch), rel=1e-5)
    # A random model over ~1000 tokens: near log2(V) bits per token spread over ~3-4 bytes per token.
    assert 1.0 < got < 10.0


def test_bpb_is_additive_over_batches_and_steps_caps(setup):
    model, tb, batch = setup
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    assert evaluate_bpb(model, halves, tb) == pytest.approx(evaluate_bpb(model, [batch], tb), rel=1e-9)
    assert evaluate_bpb(model, halves, tb, steps=1) == pytest.approx(evaluate_bpb(model, halves[:1], tb), rel=1e-12)
    assert model.training is False


def test_special_and_ignored_targets_do_not_count(setup):
    model, tb, batch = setup
    masked = {k: v.clone() for k, v in batch.items()}
    special = tb.eq(0).nonzero()[0].item()
    masked["shift_labels"][3, 5:] = special  # all special from here: neither loss nor bytes
    ignored = {k: v.clone() for k, v in batch.items()}
    ignored["shift_labels"][3, 5:] = -100
    assert evaluate_bpb(model, [masked], tb) == pytest.approx(evaluate_bpb(model, [ignored], tb), rel=1e-9)


def test_bad_input_errors(setup):
    model, tb, batch = setup
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_bpb(model, [{"input_ids": batch["input_ids"], "shift_labels": batch["shift_labels"][:, 1:]}], tb)
    with pytest.raises(ValueError, match="no target bytes"):
        evaluate_bpb(model, [{"input_ids": batch["input_ids"], "shift_labels": torch.full_like(batch["shift_labels"], -100)}], tb)
    with pytest.raises(ValueError, match=r"has no entry in token_bytes \(3 entries"):
        evaluate_bpb(model, [batch], tb[:3])


def test_padded_vocabulary_rows_beyond_the_tokenizer_are_allowed(setup):
    """A model whose vocabulary is padded to a multiple of 64 has more logits than token_bytes entries:
    those rows are never targets, so bits per byte equals the unpadded computation."""
    model, tb, batch = setup
    targets = batch["shift_labels"]
    cut = int(targets[targets >= 0].max()) + 1  # the table only has to cover the ids that occur
    assert cut < model.config.vocab_size
    assert evaluate_bpb(model, [batch], tb[:cut]) == pytest.approx(evaluate_bpb(model, [batch], tb), rel=1e-12)


def test_perplexity_is_exp_of_mean_nats_over_the_bpb_targets(setup):
    model, tb, batch = setup
    nats, nbytes, tokens = _sums_by_hand(model, tb, batch)
    val = evaluate_val_loss(model, [batch], tb)
    assert (val.tokens, val.bytes) == (tokens, nbytes)  # the special and ignored targets are left out of both
    assert val.perplexity == pytest.approx(math.exp(nats / tokens), rel=1e-5)
    assert val.bpb == pytest.approx(evaluate_bpb(model, [batch], tb), rel=1e-12)
    # the identity that ties them: ln(ppl) * tokens = bpb * ln(2) * bytes (the same nats)
    assert math.log(val.perplexity) * val.tokens == pytest.approx(val.bpb * math.log(2) * val.bytes, rel=1e-9)
    # a random model is about as unsure as a uniform guess over the vocabulary
    assert 0.3 * model.config.vocab_size < val.perplexity < 3 * model.config.vocab_size
