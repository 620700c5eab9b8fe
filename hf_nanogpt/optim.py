"""Optimizer: Muon for the 2-D matrices inside the blocks, AdamW for everything else, optional Lookahead.

Parameter groups (nanochat master's table; s = (width/768)^-0.5, the AdamW lrs were tuned at width 768;
every AdamW group has eps 1e-10 and decoupled decay `p *= 1 - lr * wd`; every trainable parameter lands
in exactly one group, asserted):

| group           | parameters                                   | lr                          | betas        | wd    |
|-----------------|----------------------------------------------|-----------------------------|--------------|-------|
| lm_head         | the output projection (absent when tied)     | unembedding_lr x s          | (0.8, 0.96)  | 0.01  |
| embedding       | token (and learned position) embeddings      | embedding_lr x s            | (0.8, 0.995) | 0.001 |
| value_embedding | value embeddings (ResFormer)                 | embedding_lr x s x 0.5      | (0.8, 0.995) | 0.01  |
| resid           | resid_lambdas                                | scalar_lr x 0.01            | (0.8, 0.95)  | 0.05  |
| x0              | x0_lambdas                                   | scalar_lr                   | (0.96, 0.95) | 0     |
| smear           | smear gate, smear_lambda, backout_lambda     | 0.2                         | (0.8, 0.95)  | 0     |
| router          | MoE router gates (`init_role="router"`)      | 0.005 (nanochat moe3)       | (0.8, 0.95)  | 0     |
| ssm             | Mamba A_log, D, dt_bias, conv1d, gated norm  | 0.003 (Mamba: 5x GPT-3's)   | (0.9, 0.95)  | 0     |
| scalar          | norm weights and biases (GPT-2 family only)  | scalar_lr x 0.01            | (0.8, 0.95)  | 0     |
| adapter         | LoRA A/B matrices (PEFT)                     | lora_lr                     | (0.8, 0.95)  | 0     |
| matrix (Muon)   | q/k/v/o, MLP, value-embedding gate, Mamba in/out projections, experts (3-D) | matrix_lr x max(1, R/C)^0.5 | - | sched |

All but `matrix` are AdamW groups. Muon's momentum and weight decay are scheduled (hf_nanogpt/schedules.py).
A 3-D parameter in the Muon group (MoE experts, (E, R, C)) is E matrices: each expert is orthogonalised on
its own (nanochat moe3), batched with every other (R, C) matrix of the step. The router's per-expert
balancing bias is a buffer, moved outside the gradient (`hf_nanogpt.moe_nanogpt.moe_step`).

`MuonAdamW` is one `torch.optim.Optimizer` that runs both update rules, so accelerate, LR schedulers,
checkpoints and `transformers.Trainer` see a single optimizer. A Muon group's `variant` picks the rule:

- "nanochat" (nanochat master, the default): Nesterov momentum -> MuonEq (each row rescaled to the mean
  row norm) -> Polar Express (5 iterations, arXiv:2505.16932) -> Muon+ (Frobenius norm sqrt(min(R, C)))
  -> NorMuon variance reduction (arXiv:2510.05491, a second moment of shape (R, 1) or (1, C)) -> the
  update with cautious weight decay `p -= lr * g + lr * wd * p * [g * p >= 0]`. Matches nanochat's own
  three golden steps (`shared/data/nanochat_golden/muon_steps.*`) to ~1e-7 relative on CPU in float32.
- "keller" (Keller Jordan's Muon, nanochat before 2026): Nesterov momentum, 5 quintic Newton-Schulz
  steps, decoupled weight decay; step for step the update of `torch.optim.Muon` (tested).

We depart from `torch.optim.Muon` in four places:
0. Newton-Schulz / Polar Express runs in float32 on CPUs without native bf16 matmuls (bfloat16 on GPUs
   and on CPUs with AVX512-BF16 or AMX, as torch's and nanochat's everywhere; `newton_schulz_dtype`);
1. one optimizer for both rules (torch's Muon only accepts 2-D parameters);
2. matrices of the same shape are orthogonalised together as one batched matmul (fewer kernel
   launches; the deep nanochat models have 6 matrices of 2 shapes per layer);
3. FSDP2 shards (`DTensor`): orthogonalisation needs the whole matrix, so the momentum-mixed gradient is
   all-gathered, orthogonalised, and each rank keeps its own shard of the result (torch's Muon would
   orthogonalise each shard on its own, which is a different, wrong update). NorMuon's second moment is
   tiny (R or C floats) and kept whole on every rank. DeepSpeed ZeRO hands the optimizer flat 1-D
   shards, where Muon cannot run at all.

`Lookahead` (Zhang et al. 2019, arXiv:1907.08610) wraps the whole optimizer; see its docstring for why it is
written here instead of taken from `pytorch-optimizer`.
"""

import math
from collections import OrderedDict, defaultdict
from itertools import chain

import torch
from torch import nn
from torch.optim.adamw import adamw

try:  # DTensor (FSDP2 shards); absent from very old torch builds
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover
    DTensor = None

# Keller Jordan's quintic Newton-Schulz coefficients (also torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al. 2025, arXiv:2505.16932): one (a, b, c) per iteration, computed for a safety
# factor of 2e-2 and cushion 2; the input is normalised by 1.01 x its Frobenius norm (nanochat master).
POLAR_EXPRESS_COEFFICIENTS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
MUON_VARIANTS = ("nanochat", "keller")


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX-BF16), where oneDNN's bf16
    GEMM runs faster than float32 (measured on a 2-core AMD EPYC with AVX512-BF16, one thread: 456 vs 93
    GFLOP/s for (8, 256, 1024) x (8, 1024, 256)); without them bf16 is emulated and ~10x slower."""
    capabilities = getattr(torch.cpu, "get_capabilities", lambda: {})()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """The orthogonalisation precision: bfloat16, as nanochat, Keller Jordan's Muon and `torch.optim.Muon`
    use everywhere, on GPUs and on CPUs with native bf16 matmuls; float32 on other CPUs, where bf16 matmuls
    are emulated and slower than float32 (then the result is also a little more exact)."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_matmul()):
        return torch.bfloat16
    return torch.float32


def zeropower_via_newtonschulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                               coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                               dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately orthogonalise g (..., m, n): U S V^T -> U S' V^T with S' ~ 1 (Keller Jordan's Muon).

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


def polar_express(g: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Polar Express orthogonalisation of a stack g (k, R, C), nanochat master's iteration.

    X = g / (1.01 ||g||_F + 1e-6); per (a, b, c): tall (R > C) X <- a X + X (b A + c A^2) with A = X^T X,
    else X <- a X + (b A + c A^2) X with A = X X^T (the Gram matrix is always the smaller side).
    """
    x = g.to(dtype or newton_schulz_dtype(g.device))
    return polar_express_iterations(x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6), steps)


def reusable_empty(scratch: dict | None, name: str, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """An uninitialised tensor of this shape, dtype and device: `scratch[name]` when it is one, else a new one,
    kept there for the next call when `scratch` is a dict (None: always new, nothing kept)."""
    t = None if scratch is None else scratch.get(name)
    if t is None or t.shape != torch.Size(shape) or t.dtype != dtype or t.device != torch.device(device):
        t = torch.empty(shape, dtype=dtype, device=device)
        if scratch is not None:
            scratch[name] = t
    return t


def polar_express_iterations(x: torch.Tensor, steps: int = 5, scratch: dict | None = None) -> torch.Tensor:
    """The Polar Express polynomial steps on an already normalised stack x (k, R, C), in x's dtype; x is only read.

    Every product is written into four buffers (the Gram matrix, the polynomial, two (k, R, C) iterates in
    turn); with `scratch` (a dict, see `reusable_empty`) they are kept from the last call of the same shape:
    on a CPU a fresh multi-MiB tensor per product costs page faults on first touch, as much as the bf16
    matmul itself at these sizes.
    """
    tall = x.size(-2) > x.size(-1)
    k, m = x.shape[0], min(x.shape[-2:])
    gram = reusable_empty(scratch, "gram", (k, m, m), x.dtype, x.device)
    poly = reusable_empty(scratch, "poly", (k, m, m), x.dtype, x.device)
    iterates = [reusable_empty(scratch, name, x.shape, x.dtype, x.device) for name in ("iterate0", "iterate1")]
    for i, (a, b, c) in enumerate(POLAR_EXPRESS_COEFFICIENTS[:steps]):
        torch.bmm(x.mT, x, out=gram) if tall else torch.bmm(x, x.mT, out=gram)  # (k, m, m)
        torch.baddbmm(gram, gram, gram, beta=b, alpha=c, out=poly)  # b A + c A^2
        new = iterates[i % 2]
        torch.baddbmm(x, x, poly, beta=a, out=new) if tall else torch.baddbmm(x, poly, x, beta=a, out=new)
        x = new
    return x


def nanochat_muon_direction(u: torch.Tensor, second_moment: torch.Tensor, beta2: float, steps: int = 5,
                            dtype: torch.dtype | None = None, scratch: dict | None = None) -> torch.Tensor:
    """The update direction of nanochat master's Muon for a float32 stack u (k, R, C) of momentum-mixed gradients.

    Updates `second_moment` (k, R, 1) when R >= C else (k, 1, C) in place (NorMuon's EMA) and returns the
    direction X (k, R, C) in float32; the caller applies lr and cautious weight decay. With `scratch` (a
    dict reused across calls, see `reusable_empty`) the buffers are kept and the direction is written over u.

    The maths is nanochat's four stages; the order of work is not. Off the matmuls, Muon's time is passes
    over (k, R, C) (a 2-core CPU spends more time there than in Polar Express's bf16 matmuls), so every norm
    and rescaling whose result is per matrix, row or column is computed on those small tensors and folded
    into one multiply: one read for the row norms and one write of X before Polar Express, one read for
    the NorMuon variances and one write of the direction after it.
    """
    rows, cols = u.shape[-2:]
    # 1. MuonEq: row r of U times f_r = (||U||_F / sqrt(R)) / max(||u_r||, 1e-6), the mean row norm over its own
    row_norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True)  # (k, R, 1), the only pass over U
    frob = row_norm.square().sum(dim=(-2, -1), keepdim=True).sqrt()  # (k, 1, 1) = ||U||_F
    f = (frob / math.sqrt(rows)) / row_norm.clamp(min=1e-6)  # (k, R, 1)
    # 2. Polar Express on X = U' / (1.01 ||U'||_F + 1e-6), U' = f U; ||U'||_F from the row norms of U'
    eq_frob = (row_norm * f).square().sum(dim=(-2, -1), keepdim=True).sqrt()  # (k, 1, 1)
    x = reusable_empty(scratch, "x", u.shape, dtype or newton_schulz_dtype(u.device), u.device)
    torch.mul(u, f / (eq_frob * 1.01 + 1e-6), out=x)  # cast to the orthogonalisation dtype in the same pass
    x = polar_express_iterations(x, steps, scratch)
    # NorMuon's axis: per row (R >= C) or per column; v = mean square along the other axis, in float32
    dim = -1 if rows >= cols else -2
    n = x.size(dim)
    if dim == -1:  # (k, R, 1)
        v = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_().div_(n)
    else:  # (k, 1, C): a norm across rows is 2.6x slower than this sum of squares (1M elements, one CPU thread)
        v = x.float().square().sum(dim=-2, keepdim=True).div_(n)  # not square_: .float() of float32 x is x
    # 3. Muon+: X scaled by s to Frobenius norm sqrt(min(R, C)), that of an exactly orthogonal matrix
    s = math.sqrt(min(rows, cols)) / (v.sum(dim=(-2, -1), keepdim=True) * n).sqrt().clamp(min=1e-6)  # (k, 1, 1)
    v = v * s.square()  # the variances of s X
    # 4. NorMuon: the variances EMA'd, divided out, the total norm preserved
    v_norm = (v.sum(dim=(-2, -1), keepdim=True) * n).sqrt()
    second_moment.lerp_(v.to(second_moment.dtype), 1 - beta2)
    q = second_moment.clamp(min=1e-10).rsqrt()
    new_norm = (v * n * q.square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    coef = s * q * (v_norm / new_norm.clamp(min=1e-10))
    if scratch is not None:  # u is no longer needed: the direction goes in its place
        return torch.mul(x, coef, out=u)
    return x * coef  # one pass: scale and back to float32


def is_dtensor(t: torch.Tensor) -> bool:
    """Whether `t` is a DTensor (an FSDP2 shard of a parameter or gradient)."""
    return DTensor is not None and isinstance(t, DTensor)


class MuonAdamW(torch.optim.Optimizer):
    """Muon + AdamW in one optimizer. Each param group has `kind` = "muon" or "adamw".

    Muon groups use `lr`, `momentum`, `weight_decay`, `ns_steps`, `variant` ("nanochat" or "keller"),
    `beta2` (nanochat's NorMuon) and `nesterov` (keller); AdamW groups use `lr`, `betas`, `eps`,
    `weight_decay`. Every group reads `lr`, `momentum` and `weight_decay` at each step, so schedules work
    as usual. A Muon group's lr is the rate of a square matrix: each (R, C) matrix moves with
    lr x max(1, R/C)^0.5. `ns_dtype` is the orthogonalisation precision (None: `newton_schulz_dtype` of the device).
    """

    def __init__(self, param_groups: list[dict], *, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, betas: tuple[float, float] = (0.8, 0.95), eps: float = 1e-10,
                 weight_decay: float = 0.0, variant: str = "nanochat", beta2: float = 0.9,
                 ns_dtype: torch.dtype | None = None):
        self.ns_dtype = ns_dtype
        self.scratch: dict = {}  # CPU only: (R, C) -> reused buffers of that shape's stack; not part of the state
        for group in param_groups:
            name = group.get("name", "?")
            if group.get("kind") not in ("muon", "adamw"):
                raise ValueError(f"MuonAdamW: param group {name!r} needs kind='muon' or 'adamw'")
            if group["kind"] == "muon":
                bad = [tuple(p.shape) for p in group["params"] if p.ndim not in (2, 3)]
                if bad:
                    raise ValueError(f"MuonAdamW: Muon group {name!r} holds params {bad} that are neither matrices "
                                     "nor stacks of matrices (2-D or 3-D)")
                if group.get("variant", variant) not in MUON_VARIANTS:
                    raise ValueError(f"MuonAdamW: Muon group {name!r} has variant={group['variant']!r}; "
                                     f"expected one of {MUON_VARIANTS}")
        defaults = dict(lr=1e-3, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay, variant=variant, beta2=beta2)
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
        lr, mom, wd, nanochat = group["lr"], group["momentum"], group["weight_decay"], group["variant"] == "nanochat"
        nesterov = nanochat or group["nesterov"]
        # Matrices of equal shape are orthogonalised together: param index -> (R, C) and its count k_i
        # (1 for a matrix, E for an (E, R, C) expert stack); each shape's stack is (sum k_i, R, C).
        by_shape = defaultdict(list)
        for i, p in enumerate(params):
            by_shape[tuple(p.shape[-2:])].append(i)
        for (rows, cols), members in by_shape.items():
            counts = [params[i].shape[0] if params[i].ndim == 3 else 1 for i in members]
            # nanochat's normalisations run in float32 whatever the weights' dtype; keller's in the grads'
            dtype = torch.float32 if nanochat else params[members[0]].grad.dtype
            first = params[members[0]]
            device = first.to_local().device if is_dtensor(first) else first.device
            # On a CPU the stack and Polar Express's buffers live on from step to step (`scratch`, never saved):
            # fresh multi-MiB tensors cost page faults there. A GPU's caching allocator already reuses memory,
            # and keeping every shape's buffers at once would cost ~10 bytes per matrix parameter there.
            scratch = self.scratch.setdefault((rows, cols), {}) if device.type == "cpu" else None
            full = reusable_empty(scratch, "full", (sum(counts), rows, cols), dtype, device)  # (k, R, C)
            offsets = [0]
            for i, k in zip(members, counts):
                p, j = params[i], offsets[-1]
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)  # M <- M + (1 - m)(G - M), works shard-wise on DTensors
                target = full[j:j + k].view(p.shape)
                if is_dtensor(p):  # orthogonalisation needs whole matrices: gather this param's shards
                    target.copy_((p.grad.lerp(buf, mom) if nesterov else buf).full_tensor())
                elif nesterov:  # U = G + m (M - G), written straight into the stack
                    torch.lerp(p.grad, buf, mom, out=target)
                else:
                    target.copy_(buf)
                offsets.append(j + k)
            if nanochat:
                moments = [self._second_moment(params[i], rows, cols) for i in members]
                stacked = torch.cat([m.view(-1, *m.shape[-2:]) for m in moments])  # (k, R, 1) or (k, 1, C)
                direction = nanochat_muon_direction(full, stacked, group["beta2"], group["ns_steps"], self.ns_dtype,
                                                    scratch)
                for m, j, k in zip(moments, offsets, counts):
                    m.copy_(stacked[j:j + k].view(m.shape))
            else:
                direction = zeropower_via_newtonschulz(full, steps=group["ns_steps"], dtype=self.ns_dtype)
            scale = math.sqrt(max(1.0, rows / cols))  # tall matrices move faster (nanochat, torch "original")
            for i, j, k in zip(members, offsets, counts):
                p = params[i]
                o = direction[j:j + k].view(p.shape).to(p.dtype)
                if is_dtensor(p):  # keep only this rank's shard of the full update
                    o = distribute_tensor(o, p.device_mesh, p.placements, src_data_rank=None)
                if nanochat:  # p -= eff o + eff wd p [o p >= 0]: cautious decay, only where update and weight agree
                    eff = lr * scale
                    if wd:
                        p.addcmul_(p, (o * p) >= 0, value=-eff * wd)
                    p.add_(o, alpha=-eff)
                else:
                    p.mul_(1 - lr * wd)
                    p.add_(o, alpha=-lr * scale)

    def _second_moment(self, p: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """NorMuon's second moment of `p`: (R, 1) when R >= C else (1, C), with a leading expert dim for a 3-D
        parameter, float32, whole on every rank."""
        state = self.state[p]
        if "second_momentum_buffer" not in state:
            shape = p.shape[:-2] + ((rows, 1) if rows >= cols else (1, cols))
            device = p.to_local().device if is_dtensor(p) else p.device
            state["second_momentum_buffer"] = torch.zeros(shape, dtype=torch.float32, device=device)
        return state["second_momentum_buffer"]

    def _adamw_step(self, group: dict, params: list[torch.Tensor]) -> None:
        """torch's AdamW update (decoupled decay, bias-corrected) through its functional form: its fused
        one-pass kernel where it has one (CPU, CUDA; 4x faster than our loop of tensor ops at 2 x 2M params
        on one CPU thread), its per-tensor loop for FSDP2 shards."""
        fused = all(p.device.type in ("cpu", "cuda") and not is_dtensor(p) for p in params)
        steps, exp_avgs, exp_avg_sqs = [], [], []
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            # torch counts steps in a float32 tensor (on the param's device when fused); older checkpoints hold an int
            device = p.device if fused else torch.device("cpu")
            step = state["step"]
            if not torch.is_tensor(step) or step.device != device or step.dtype != torch.float32:
                state["step"] = torch.as_tensor(step, dtype=torch.float32).to(device)
            steps.append(state["step"])
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        (beta1, beta2) = group["betas"]
        adamw(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, foreach=False,
              fused=fused or None, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
              weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) around any optimizer: every `k` steps the slow weights move `alpha` of
    the way to the fast weights, and the fast weights restart from there (phi += alpha (theta - phi); theta = phi).

    Written here rather than taken from `pytorch-optimizer` (whose `Lookahead` we checked, 4.1.0): its
    `state_dict()` nests the slow weights under its own keys next to a `base_optimizer` entry, which
    torch.distributed.checkpoint's `get/set_optimizer_state_dict` (our FSDP2 checkpoints) cannot map to
    parameter names. Here the slow weights are one more per-parameter entry (`lookahead_slow`) of the
    inner optimizer's standard state dict, so FSDP2 shards and gathers them like Adam moments, and the
    step counter lives in each param group, so a resumed run syncs on the same steps (bitwise exact).
    Slow weights are taken lazily at the first step (after accelerate / FSDP2 have swapped parameters).
    """

    SLOW = "lookahead_slow"

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if k < 1:
            raise ValueError(f"Lookahead: k={k} is invalid: expected a positive number of steps")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Lookahead: alpha={alpha} is invalid: expected a value in (0, 1]")
        # No super().__init__: param groups and state are the inner optimizer's (properties below).
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        self.slow: dict[torch.Tensor, torch.Tensor] = {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = OrderedDict(), OrderedDict()
        for group in self.param_groups:
            group.setdefault("lookahead_step", 0)

    param_groups = property(lambda self: self.optimizer.param_groups)
    state = property(lambda self: self.optimizer.state)
    defaults = property(lambda self: self.optimizer.defaults)

    def _params(self, groups=None) -> list:
        return list(chain.from_iterable(g["params"] for g in (groups if groups is not None else self.param_groups)))

    @torch.no_grad()
    def step(self, closure=None):
        for p in self._params():
            if p not in self.slow:
                self.slow[p] = p.detach().clone()  # phi_0 = theta_0
        loss = self.optimizer.step(closure)
        for group in self.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % self.k == 0:
                for p in group["params"]:
                    slow = self.slow[p]
                    slow.lerp_(p.detach(), self.alpha)
                    p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)
        self.param_groups[-1].setdefault("lookahead_step", 0)

    def state_dict(self) -> dict:
        """The inner optimizer's state dict with each parameter's slow weights as `lookahead_slow`."""
        sd = self.optimizer.state_dict()
        index = {id(p): i for i, p in enumerate(self._params())}  # torch packs parameters in this order
        state = dict(sd["state"])
        for p, slow in self.slow.items():
            i = index[id(p)]
            state[i] = {**state.get(i, {}), self.SLOW: slow}  # a copy: never touch the inner state dicts
        return {**sd, "state": state}

    def load_state_dict(self, state_dict: dict) -> None:
        # saved parameter keys (ids, or names under torch.distributed.checkpoint) map by position
        saved = self._params(state_dict["param_groups"])
        by_key = dict(zip(saved, self._params()))
        inner, self.slow = {}, {}
        for key, entry in state_dict["state"].items():
            entry = dict(entry)
            slow = entry.pop(self.SLOW, None)
            if slow is not None:
                p = by_key[key]
                self.slow[p] = slow.to(device=p.device, dtype=p.dtype)
            if entry:
                inner[key] = entry
        self.optimizer.load_state_dict({**state_dict, "state": inner})


# ----------------------------------------------------------------------------- parameter groups

GROUP_NAMES = ("matrix", "lm_head", "embedding", "value_embedding", "resid", "x0", "smear", "router", "ssm", "scalar",
               "adapter")
SMEAR_LR = 0.2  # nanochat master: fixed, not scaled with the width or the batch size
ROUTER_LR = 0.005  # nanochat moe3's router lr (AdamW), fixed like the smear lr
SSM_LR = 0.003  # Mamba's small models trained every parameter with AdamW at 5x GPT-3's lr (6e-4 at 125M)


def classify_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split trainable parameters into the groups of the module docstring. Modules are classified by their
    `init_role` (so wrapped models -- PEFT, DDP, FSDP -- classify the same way); bare parameters of the
    model (the residual, x0, smear and backout scalars) by their own name."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {k: [] for k in GROUP_NAMES}
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
            elif role == "value_embedding":
                kind = "value_embedding"
            elif role in ("token_embedding", "position_embedding") or isinstance(module, nn.Embedding):
                kind = "embedding"
            elif role == "lm_head":
                kind = "lm_head"
            elif role == "smear_gate" or p_name in ("smear_lambda", "backout_lambda"):
                kind = "smear"
            elif role == "router":
                kind = "router"
            elif role == "ssm":  # Mamba's A_log, D, dt_bias, conv1d and gated-norm weights: never Muon
                kind = "ssm"
            elif role == "experts":
                kind = "matrix"  # (E, R, C): Muon, one expert at a time
            elif p.ndim == 2:
                kind = "matrix"  # block matrices, the value-embedding gates included (nanochat)
            elif p_name == "x0_lambdas":
                kind = "x0"
            elif p_name == "resid_lambdas":
                kind = "resid"
            else:
                kind = "scalar"
            groups[kind].append((name, p))
    trainable = [p for p in model.parameters() if p.requires_grad]
    placed = sum(len(v) for v in groups.values())
    assert placed == len({id(p) for p in trainable}), "every trainable parameter must land in exactly one group"
    return groups


def build_optimizer(model: nn.Module, *, matrix_lr: float = 0.02, embedding_lr: float = 0.3,
                    unembedding_lr: float = 0.008, scalar_lr: float = 0.5, lora_lr: float = 1e-3,
                    weight_decay: float = 0.0, momentum: float = 0.95, muon_variant: str = "nanochat",
                    lr_scale: float = 1.0, batch_lr_scale: float = 1.0, width: int | None = None,
                    lookahead_k: int = 0, lookahead_alpha: float = 0.5, matrix_optimizer: str = "muon",
                    adamw_betas: tuple[float, float] = (0.9, 0.95),
                    ns_dtype: torch.dtype | None = None) -> torch.optim.Optimizer:
    """The nanochat optimizer for `model` (the groups of the module docstring).

    `batch_lr_scale` multiplies the recipe lrs (nanochat's sqrt(B / B_ref) transfer; not the fixed smear lr),
    `lr_scale` every lr (SFT's init_lr_frac). `weight_decay` and `momentum` are the Muon group's starting
    values (the training loop schedules them). Each group records its peak lr as `initial_lr`, which the lr
    schedule multiplies. `lookahead_k > 0` wraps the result in `Lookahead(k, alpha)`.

    `matrix_optimizer="adamw"` is nanoGPT's optimizer instead: AdamW for the block matrices too (at matrix_lr),
    every group with `adamw_betas` and torch's eps 1e-8, `weight_decay` (constant) on every 2-D tensor
    (matrices, embeddings, head) and none on the vectors, as nanoGPT's `configure_optimizers`.
    `ns_dtype` is Muon's orthogonalisation precision (None: `newton_schulz_dtype` of the device).
    """
    if matrix_optimizer not in ("muon", "adamw"):
        raise ValueError(f"matrix_optimizer={matrix_optimizer!r} is invalid: expected 'muon' or 'adamw'")
    width = width or model.config.hidden_size
    s = (width / 768) ** -0.5  # AdamW lrs were tuned at width 768
    b = batch_lr_scale
    # name -> (lr, betas, weight decay) of the AdamW groups (nanochat master's table)
    adamw = {
        "lm_head": (unembedding_lr * s * b, (0.8, 0.96), 0.01),
        "embedding": (embedding_lr * s * b, (0.8, 0.995), 0.001),
        "value_embedding": (embedding_lr * s * 0.5 * b, (0.8, 0.995), 0.01),
        "resid": (scalar_lr * 0.01 * b, (0.8, 0.95), 0.05),
        "x0": (scalar_lr * b, (0.96, 0.95), 0.0),
        "smear": (SMEAR_LR, (0.8, 0.95), 0.0),
        "router": (ROUTER_LR, (0.8, 0.95), 0.0),
        "ssm": (SSM_LR, (0.9, 0.95), 0.0),
        "scalar": (scalar_lr * 0.01 * b, (0.8, 0.95), 0.0),
        "adapter": (lora_lr * b, (0.8, 0.95), 0.0),
    }
    param_groups = []
    for name, params in classify_parameters(model).items():
        if not params:
            continue
        group = dict(name=name, params=[p for _, p in params])
        if matrix_optimizer == "adamw":  # nanoGPT: one AdamW rule, decay decided by the tensor's rank
            lr = (matrix_lr * b if name == "matrix" else adamw[name][0]) * lr_scale
            decayed = all(p.ndim >= 2 for _, p in params)
            group.update(kind="adamw", lr=lr, initial_lr=lr, betas=tuple(adamw_betas), eps=1e-8,
                         weight_decay=weight_decay if decayed else 0.0)
        elif name == "matrix":
            lr = matrix_lr * b * lr_scale
            group.update(kind="muon", lr=lr, initial_lr=lr, momentum=momentum, weight_decay=weight_decay,
                         variant=muon_variant, beta2=0.9, ns_steps=5, nesterov=True)
        else:
            lr, betas, wd = adamw[name]
            group.update(kind="adamw", lr=lr * lr_scale, initial_lr=lr * lr_scale, betas=betas, eps=1e-10,
                         weight_decay=wd)
        param_groups.append(group)
    optimizer = MuonAdamW(param_groups, variant=muon_variant, ns_dtype=ns_dtype)
    return Lookahead(optimizer, lookahead_k, lookahead_alpha) if lookahead_k > 0 else optimizer


def apply_schedule(optimizer: torch.optim.Optimizer, lr_mult: float, momentum: float | None = None,
                   weight_decay: float | None = None) -> None:
    """Set each group's lr to `initial_lr * lr_mult`, and the Muon groups' momentum and weight decay."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_mult
        if group.get("kind") == "muon":
            if momentum is not None:
                group["momentum"] = momentum
            if weight_decay is not None:
                group["weight_decay"] = weight_decay


def parameter_groups_summary(optimizer: torch.optim.Optimizer) -> list[dict]:
    """One row per group (name, kind, tensors, parameters, peak lr, betas, weight decay) for logs."""
    return [dict(name=g.get("name"), kind=g["kind"], tensors=len(g["params"]),
                 params=sum(p.numel() for p in g["params"]), lr=g["initial_lr"], betas=g.get("betas"),
                 weight_decay=g["weight_decay"]) for g in optimizer.param_groups]
