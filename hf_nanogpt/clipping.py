"""Gradient clipping by norm, over all gradients, each parameter tensor, or each block (`grad_clip_mode`).

- `global`: one norm over every gradient; all are scaled by min(1, threshold / norm) (nanoGPT, torch's
  `clip_grad_norm_`);
- `per_param`: each parameter tensor's gradient is clipped to the threshold on its own;
- `per_layer`: each transformer block (`...layers.<i>.`) is clipped as one unit; parameters outside the
  blocks are grouped by their module (`model.embed_tokens`, `lm_head`, the model's own scalars as `model`).

The same `grad_clip` threshold serves every mode. The training loop calls `clip_gradients` once per
optimizer step, after the last micro-batch's backward: gradients are then fully accumulated and (DDP)
all-reduced, so the norms are those of the global batch's gradient whatever the split. Under FSDP2 a
gradient is a `DTensor` shard: its norm is reduced over the shards first, and each rank scales its own
shard. The pre-clip norms are returned for the logs.
"""

import re
from collections.abc import Callable, Iterable

import torch

from .optim import is_dtensor

CLIP_MODES = ("global", "per_param", "per_layer")
_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def clip_group(name: str, mode: str) -> str:
    """The clipping unit of parameter `name` under `mode` (`global`: one unit for everything)."""
    if mode == "global":
        return "all"
    if mode == "per_param":
        return name
    if mode != "per_layer":
        raise ValueError(f"grad_clip_mode={mode!r} is invalid: expected one of {', '.join(CLIP_MODES)}")
    block = _BLOCK.search(name)
    if block:
        return f"layers.{block.group(1)}"
    return name.rsplit(".", 1)[0] if "." in name else name


@torch.no_grad()
def gradient_norms(named_params: Iterable[tuple[str, torch.nn.Parameter]], mode: str) -> dict[str, torch.Tensor]:
    """{clipping unit: L2 norm of its gradients} (float32 scalars; DTensor shards reduced to full norms)."""
    squares: dict[str, torch.Tensor] = {}
    for name, p in named_params:
        if p.grad is None:
            continue
        norm = torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32)
        if is_dtensor(norm):
            norm = norm.full_tensor()
        key = clip_group(name, mode)
        squares[key] = squares[key] + norm.square() if key in squares else norm.square()
    return {k: v.sqrt() for k, v in squares.items()}


@torch.no_grad()
def clip_gradients(named_params: Iterable[tuple[str, torch.nn.Parameter]], max_norm: float, mode: str = "global",
                   unscale: Callable[[], None] | None = None) -> dict:
    """Clip gradients in place; return the pre-clip norms for the logs.

    `max_norm <= 0` only measures. `unscale` (accelerate's `unscale_gradients`) runs first so fp16 loss
    scaling never reaches the norms. Returns `grad_norm` (the global pre-clip norm), `grad_norm_max` (the
    largest unit's), `grad_clipped` (how many units were scaled down) and, for `per_layer`, `grad_norms`
    ({unit: norm}).
    """
    named = [(n, p) for n, p in named_params if p.grad is not None]
    if unscale is not None:
        unscale()
    norms = gradient_norms(named, "per_param" if mode == "global" else mode)  # also validates `mode`
    if not norms:
        return dict(grad_norm=0.0, grad_norm_max=0.0, grad_clipped=0)
    stacked = torch.stack(list(norms.values()))  # (units,)
    total = torch.linalg.vector_norm(stacked)
    clipped = 0
    if max_norm > 0:
        units = {"all": total} if mode == "global" else norms
        # only units above the threshold are scaled (to exactly the threshold); the others stay bit for bit
        coefs = {k: max_norm / v if v > max_norm else None for k, v in units.items()}
        clipped = sum(c is not None for c in coefs.values())
        for name, p in named:
            coef = coefs[clip_group(name, mode)]
            if coef is None:
                continue
            grad = p.grad.to_local() if is_dtensor(p.grad) else p.grad  # each rank scales its own shard
            grad.mul_(coef.to(grad.device, grad.dtype))
    out = dict(grad_norm=float(total), grad_norm_max=float(stacked.max()), grad_clipped=clipped)
    if mode == "per_layer":
        out["grad_norms"] = {k: float(v) for k, v in norms.items()}
    return out
