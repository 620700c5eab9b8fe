"""Bits per byte and perplexity from one pass over validation data.

Mean cross-entropy per token changes with the vocabulary (a bigger vocabulary packs more text per
token), so nanochat reports bits per byte instead:

    bpb = sum of per-token losses in nats / (ln 2 * sum of UTF-8 bytes of those target tokens)

Perplexity, the number nanoGPT users know, comes from the same targets and the same pass:

    perplexity = exp(sum of per-token losses in nats / number of those target tokens)

Perplexity is per *token*, so it depends on the tokenizer: a byte-level model and a 32k-BPE model with
the same bits per byte have very different perplexities (the BPE one predicts ~4 bytes per token).
Compare perplexities only between models that share a tokenizer; compare across tokenizers with bits
per byte.

Targets that are special tokens (0 bytes, e.g. BOS) and ignored targets (-100) count towards none of
the sums. With several processes the sums are added over ranks before the division, so the result is
the same as one process evaluating every batch.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum


@dataclass(frozen=True)
class ValLoss:
    """Validation loss over the counted targets: bits per byte, perplexity, and the sums behind them."""

    bpb: float
    perplexity: float
    nats_per_token: float
    tokens: int  # counted targets (not special, not ignored)
    bytes: int  # UTF-8 bytes of those targets


@torch.no_grad()
def loss_sums(model, batch: dict, token_bytes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(nats, bytes, tokens) summed over the counted targets of one batch, float64 on the model's device.

    `batch` holds `input_ids` (B, T) and `shift_labels` (B, T) (the next token at each position,
    -100 = ignored); `token_bytes` (V,) is the UTF-8 length of each token id, 0 for special tokens.
    """
    device = next(model.parameters()).device
    x = batch["input_ids"].to(device)
    y = batch["shift_labels"].to(device)
    if x.shape != y.shape:
        raise ValueError(f"bits per byte: input_ids {tuple(x.shape)} and shift_labels {tuple(y.shape)} differ in shape")
    logits = model(input_ids=x, use_cache=False).logits  # (B, T, V)
    V = logits.shape[-1]
    # The model may have more logits than the tokenizer has ids (vocabulary padded to a multiple of 64);
    # those rows are never targets. Every target id must have a byte count, though.
    valid_targets = y[y >= 0]
    if valid_targets.numel() and int(valid_targets.max()) >= token_bytes.numel():
        raise ValueError(f"bits per byte: target id {int(valid_targets.max())} has no entry in token_bytes "
                         f"({token_bytes.numel()} entries, one per tokenizer id); the model has {V} logits")
    nll = F.cross_entropy(logits.reshape(-1, V).float(), y.reshape(-1), ignore_index=-100, reduction="none")  # (B*T,)
    valid = y.reshape(-1) >= 0
    nbytes = torch.where(valid, token_bytes.to(device)[y.reshape(-1).clamp(min=0)], 0)  # (B*T,)
    counted = nbytes > 0  # the targets both metrics average over
    return (nll * counted).sum().double(), nbytes.sum().double(), counted.sum().double()


def evaluate_val_loss(model, batches: Iterable[dict], token_bytes: torch.Tensor, steps: int | None = None) -> ValLoss:
    """Bits per byte and perplexity of `model` over `batches` (at most `steps` of them), summed over ranks.

    Every rank must call this with the same number of steps (each on its own shard of the data).
    Raises `ValueError` when no target byte was counted (empty data, or all targets special).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, bytes, tokens
    try:
        for i, batch in enumerate(batches):
            if steps is not None and i >= steps:
                break
            sums += torch.stack(loss_sums(model, batch, token_bytes))
    finally:
        model.train(was_training)
    nats, nbytes, tokens = all_reduce_sum(sums).tolist()
    if nbytes == 0:
        raise ValueError("bits per byte: no target bytes were counted (empty batches, or only special/ignored targets)")
    per_token = nats / tokens
    perplexity = math.exp(per_token) if per_token < 709.0 else math.inf  # exp overflows a float64 past ~709.78
    return ValLoss(bpb=nats / (math.log(2) * nbytes), perplexity=perplexity, nats_per_token=per_token,
                   tokens=int(tokens), bytes=int(nbytes))


def evaluate_bpb(model, batches: Iterable[dict], token_bytes: torch.Tensor, steps: int | None = None) -> float:
    """Bits per byte only (`evaluate_val_loss(...).bpb`)."""
    return evaluate_val_loss(model, batches, token_bytes, steps).bpb
