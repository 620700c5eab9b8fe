"""Optimizer: Muon for the 2-D matrices inside the blocks, AdamW for everything else.

Parameter groups (nanochat's split; every trainable parameter lands in exactly one, asserted):

| group      | parameters                                   | optimizer | learning rate                      |
|------------|----------------------------------------------|-----------|------------------------------------|
| matrix     | q/k/v/o and MLP weights inside the blocks    | Muon      | matrix_lr x sqrt(max(1, rows/cols))|
| embedding  | token (and learned position) embeddings      | AdamW     | embedding_lr x (d/768)^-0.5        |
| lm_head    | the output projection (absent when tied)     | AdamW     | unembedding_lr x (d/768)^-0.5      |
| x0         | x0_lambdas (input-embedding mix scalars)     | AdamW     | scalar_lr, betas (0.96, 0.95)      |
| scalar     | resid_lambdas, norm weights, biases          | AdamW     | scalar_lr x 0.01                   |
| adapter    | LoRA A/B matrices (PEFT)                     | AdamW     | lora_lr                            |

The embedding and head learning rates were tuned by nanochat at width 768 and scale as
1/sqrt(width); the scalars' are width-independent (nanochat: the residual scalars move 100x slower
than the x0 mixing scalars).

`MuonAdamW` is one `torch.optim.Optimizer` that runs both update rules, so accelerate, LR schedulers,
checkpoints and `transformers.Trainer` see a single optimizer. Its Muon update is the one of
`torch.optim.Muon` (Keller Jordan's Muon: Nesterov momentum, 5 quintic Newton-Schulz steps in
bfloat16, lr scaled by sqrt(max(1, rows/cols)), decoupled weight decay; a test checks they agree
step for step). We depart from `torch.optim.Muon` in four places:
0. Newton-Schulz runs in float32 on CPUs (bfloat16 on GPUs, as torch's; `newton_schulz_dtype`);
1. one optimizer for both rules (torch's Muon only accepts 2-D parameters);
2. matrices of the same shape are orthogonalised together as one batched matmul (fewer kernel
   launches; the deep nanochat models have 6 matrices of 2 shapes per layer);
3. FSDP2 shards (`DTensor`): Newton-Schulz needs the whole matrix, so the momentum-mixed gradient is
   all-gathered, orthogonalised, and each rank keeps its own shard of the result (torch's Muon would
   orthogonalise each shard on its own, which is a different, wrong update). DeepSpeed ZeRO hands the
   optimizer flat 1-D shards, where Muon cannot run at all.
"""

import math
from collections import defaultdict

import torch
from torch import nn

try:  # DTensor (FSDP2 shards); absent from very old torch builds
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover
    DTensor = None

# Keller Jordan's quintic Newton-Schulz coefficients (also torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on GPUs (tensor cores; what Keller Jordan's Muon and nanochat use), float32 elsewhere:
    CPUs without bf16 matrix units run bf16 matmuls ~10x slower than float32 (measured: 0.39 s vs
    0.037 s for (8, 1024, 256) @ (8, 256, 1024) on this 2-core machine), and the result is more exact."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def zeropower_via_newtonschulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                               coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately orthogonalise g (..., m, n): U S V^T -> U S' V^T with S' ~ 1.

    Works on a batch of matrices of the same shape. Short-and-wide orientation keeps the Gram matrix
    X X^T at its smallest size. `dtype` defaults to `newton_schulz_dtype(g.device)`.
    """
    a, b, c = coefficients
    x = g.to(dtype or newton_schulz_dtype(g.device))
    transposed = g.size(-2) > g.size(-1)
    if transposed:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    if x.ndim == 2:
        x = x[None]
        squeeze = True
    else:
        squeeze = False
    for _ in range(steps):
        gram = x @ x.mT  # (k, m, m)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b G + c G^2) x
    if squeeze:
        x = x[0]
    return x.mT if transposed else x


def is_dtensor(t: torch.Tensor) -> bool:
    """Whether `t` is a DTensor (an FSDP2 shard of a parameter or gradient)."""
    return DTensor is not None and isinstance(t, DTensor)


class MuonAdamW(torch.optim.Optimizer):
    """Muon + AdamW in one optimizer. Each param group has `kind` = "muon" or "adamw".

    Muon groups use `lr`, `momentum`, `nesterov`, `weight_decay`, `ns_steps`; AdamW groups use `lr`,
    `betas`, `eps`, `weight_decay`. Both read `lr` at every step, so LR schedulers work as usual.
    `ns_dtype` is the Newton-Schulz precision (None: bfloat16 on GPUs, float32 on CPUs).
    """

    def __init__(self, param_groups: list[dict], *, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, betas: tuple[float, float] = (0.8, 0.95), eps: float = 1e-10,
                 weight_decay: float = 0.0, ns_dtype: torch.dtype | None = None):
        self.ns_dtype = ns_dtype
        for group in param_groups:
            if group.get("kind") not in ("muon", "adamw"):
                raise ValueError(f"MuonAdamW: param group {group.get('name', '?')!r} needs kind='muon' or 'adamw'")
            if group["kind"] == "muon":
                bad = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                if bad:
                    raise ValueError(f"MuonAdamW: Muon group {group.get('name', '?')!r} holds non-2-D params {bad}")
        defaults = dict(lr=1e-3, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay)
        super().__init__(param_groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon_step if group["kind"] == "muon" else self._adamw_step)(group, params)
        return loss

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        updates = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mom)  # EMA of gradients (works shard-wise on DTensors)
            updates.append(p.grad.lerp(buf, mom) if group["nesterov"] else buf)
        # Orthogonalise matrices of equal shape together; DTensor shards are gathered first.
        by_shape = defaultdict(list)
        for i, u in enumerate(updates):
            by_shape[tuple(u.shape)].append(i)
        for indices in by_shape.values():
            full = [updates[i].full_tensor() if is_dtensor(updates[i]) else updates[i] for i in indices]
            ortho = zeropower_via_newtonschulz(torch.stack(full), steps=group["ns_steps"],
                                               dtype=self.ns_dtype)  # (k, m, n)
            for j, i in enumerate(indices):
                p, o = params[i], ortho[j].to(params[i].dtype)
                if is_dtensor(p):  # keep only this rank's shard of the full update
                    o = distribute_tensor(o, p.device_mesh, p.placements, src_data_rank=None)
                rows, cols = p.shape
                p.mul_(1 - lr * wd)
                p.add_(o, alpha=-lr * math.sqrt(max(1.0, rows / cols)))

    def _adamw_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            bias1, bias2 = 1 - beta1**t, 1 - beta2**t
            p.mul_(1 - lr * wd)
            denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / bias1)


# ----------------------------------------------------------------------------- parameter groups


def classify_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split trainable parameters into the groups of the module docstring (by module role, not name
    patterns, so wrapped models -- PEFT, DDP, FSDP -- classify the same way)."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {
        k: [] for k in ("matrix", "embedding", "lm_head", "x0", "scalar", "adapter")}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        role = getattr(module, "init_role", None)
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue  # frozen, or tied and already placed
            seen.add(id(p))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if "lora_" in name:
                kind = "adapter"
            elif role in ("token_embedding", "position_embedding") or isinstance(module, nn.Embedding):
                kind = "embedding"
            elif role == "lm_head":
                kind = "lm_head"
            elif p.ndim == 2:
                kind = "matrix"
            elif p_name == "x0_lambdas":
                kind = "x0"
            else:
                kind = "scalar"
            groups[kind].append((name, p))
    trainable = [p for p in model.parameters() if p.requires_grad]
    placed = sum(len(v) for v in groups.values())
    assert placed == len({id(p) for p in trainable}), "every trainable parameter must land in exactly one group"
    return groups


def build_optimizer(model: nn.Module, *, matrix_lr: float = 0.02, embedding_lr: float = 0.2,
                    unembedding_lr: float = 0.004, scalar_lr: float = 0.5, lora_lr: float = 1e-3,
                    weight_decay: float = 0.0, betas: tuple[float, float] = (0.8, 0.95),
                    momentum: float = 0.95, lr_scale: float = 1.0, width: int | None = None,
                    matrix_optimizer: str = "muon") -> MuonAdamW:
    """The nanochat optimizer for `model`. `lr_scale` multiplies every lr (e.g. SFT's init_lr_frac).

    `matrix_optimizer="adamw"` is nanoGPT's optimizer instead: AdamW for the block matrices too (same
    groups and lrs), `weight_decay` on every 2-D tensor (matrices, embeddings, head) and none on the
    vectors. Each group records its peak lr as `initial_lr`, which the LR schedule multiplies.
    """
    if matrix_optimizer not in ("muon", "adamw"):
        raise ValueError(f"matrix_optimizer={matrix_optimizer!r} is invalid: expected 'muon' or 'adamw'")
    width = width or model.config.hidden_size
    adam_scale = (width / 768) ** -0.5  # AdamW lrs were tuned at width 768
    spec = {
        "matrix": (matrix_optimizer, matrix_lr),
        "embedding": ("adamw", embedding_lr * adam_scale),
        "lm_head": ("adamw", unembedding_lr * adam_scale),
        "x0": ("adamw", scalar_lr),
        "scalar": ("adamw", scalar_lr * 0.01),
        "adapter": ("adamw", lora_lr),
    }
    param_groups = []
    for name, params in classify_parameters(model).items():
        if not params:
            continue
        kind, lr = spec[name]
        lr *= lr_scale
        group = dict(name=name, kind=kind, params=[p for _, p in params], lr=lr, initial_lr=lr)
        decayed = kind == "muon" or (matrix_optimizer == "adamw" and name in ("matrix", "embedding", "lm_head"))
        group["weight_decay"] = weight_decay if decayed else 0.0
        if name == "x0":
            group["betas"] = (0.96, betas[1])
        param_groups.append(group)
    return MuonAdamW(param_groups, momentum=momentum, betas=betas)


def lr_multiplier(step: int, num_iterations: int, schedule: str = "wsd", warmup_ratio: float = 0.0,
                  warmdown_ratio: float = 0.2, final_lr_frac: float = 0.0) -> float:
    """Learning-rate multiplier at `step` (0-based) of `num_iterations`.

    - "wsd" (nanochat): linear warmup, constant, then linear warmdown to `final_lr_frac`;
    - "cosine": linear warmup, then cosine decay to `final_lr_frac`;
    - "constant": linear warmup, then 1.
    """
    warmup = round(warmup_ratio * num_iterations)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup) / max(1, num_iterations - warmup)
        return final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule != "wsd":
        raise ValueError(f"lr_schedule={schedule!r} is invalid: expected 'wsd', 'cosine' or 'constant'")
    warmdown = round(warmdown_ratio * num_iterations)
    if step <= num_iterations - warmdown:
        return 1.0
    progress = (num_iterations - step) / warmdown  # 1 -> 0 over the warmdown
    return progress + (1 - progress) * final_lr_frac


def muon_momentum(step: int, start: float = 0.85, end: float = 0.95, warmup_steps: int = 300) -> float:
    """Muon momentum, warmed up linearly from `start` to `end` (nanochat)."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * start + frac * end


def apply_schedule(optimizer: torch.optim.Optimizer, lr_mult: float, momentum: float | None = None) -> None:
    """Set each group's lr to `initial_lr * lr_mult` and the Muon groups' momentum."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_mult
        if momentum is not None and group.get("kind") == "muon":
            group["momentum"] = momentum


def parameter_groups_summary(optimizer: MuonAdamW) -> list[dict]:
    """One row per group (name, kind, tensors, parameters, peak lr) for logs."""
    return [dict(name=g.get("name"), kind=g["kind"], tensors=len(g["params"]),
                 params=sum(p.numel() for p in g["params"]), lr=g["initial_lr"]) for g in optimizer.param_groups]
