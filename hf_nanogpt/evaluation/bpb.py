"""Bits per byte: the validation loss that does not depend on the tokenizer.

Mean cross-entropy per token changes with the vocabulary (a bigger vocabulary packs more text per
token), so nanochat reports bits per byte instead:

    bpb = sum of per-token losses in nats / (ln 2 * sum of UTF-8 bytes of those target tokens)

Targets that are special tokens (0 bytes, e.g. BOS) and ignored targets (-100) count towards neither
sum. With several processes both sums are added over ranks before the division, so the result is the
same as one process evaluating every batch.
"""

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum


@torch.no_grad()
def bpb_sums(model, batch: dict, token_bytes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nats, bytes) summed over the counted targets of one batch, both float64 on the model's device.

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
    counted = nbytes > 0
    return (nll * counted).sum().double(), nbytes.sum().double()


def evaluate_bpb(model, batches: Iterable[dict], token_bytes: torch.Tensor, steps: int | None = None) -> float:
    """Bits per byte of `model` over `batches` (at most `steps` of them), summed over all ranks.

    Every rank must call this with the same number of steps (each on its own shard of the data).
    Raises `ValueError` when no target byte was counted (empty data, or all targets special).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i, batch in enumerate(batches):
            if steps is not None and i >= steps:
                break
            n, b = bpb_sums(model, batch, token_bytes)
            nats += n
            nbytes += b
    finally:
        model.train(was_training)
    totals = all_reduce_sum(torch.stack([nats, nbytes]))
    if totals[1].item() == 0:
        raise ValueError("bits per byte: no target bytes were counted (empty batches, or only special/ignored targets)")
    return totals[0].item() / (math.log(2) * totals[1].item())
