"""The causal-LM loss of NanoGPT: cross-entropy on (soft-capped, vocabulary-cropped) logits plus optional
extra terms, computed one of two ways with the same result.

- `causal_lm_loss(logits, targets, ...)`: the plain path, on logits the LM head already produced
  (B, T, V); autograd does the backward. Used whenever the caller wants the logits.
- `fused_causal_lm_loss(hidden, weight, targets, ...)`: the LM head matmul, the softcap, the crop to the
  real vocabulary, the cross-entropy and the extra terms, chunk by chunk over the (B*T) positions, with
  the gradients of `hidden` and `weight` computed in the same pass (as Liger-Kernel's fused linear
  cross-entropy does). No float32 logits of the whole batch ever exist: memory is one (chunk, V) block
  instead of several (B, T, V) tensors, and the elementwise passes run over cache-sized blocks.

Both paths compute, for each counted target (targets of -100 are ignored),

    s    = c * tanh(z / c)                (z = h @ W[:V].T, the first V rows; no cap when c is None)
    lse  = logsumexp(s)
    nll  = lse - s[y]
    loss = sum over targets of (nll + sum_k coef_k * term_k(s, lse, y)) / num_items

where `num_items` defaults to the number of counted targets (a mean); the training loop passes the
global count so gradient accumulation is exact. The returned `terms` hold each part's share of `loss`
(`ce`, then one entry per extra term), detached, so they sum to the loss and can be logged apart.

Extra terms live in one table, `LOSS_TERMS`: name -> function(s, lse, targets) returning one value per
position (N,), differentiable in `s` and `lse`. Adding a term means adding one entry there; both paths
apply it (the fused one takes its gradient by autograd on each (chunk, V) block) and the loop logs it.
Built in:

- `z_loss`: lse^2, PaLM's auxiliary loss that keeps the log-partition near 0 (arXiv:2204.02311, sec. 5;
  PaLM uses coefficient 1e-4);
- `label_smoothing`: s[y] - mean_v(s), which with coefficient eps turns the loss into
  (1 - eps) * nll + eps * mean_v(-log p_v), exactly `F.cross_entropy(..., label_smoothing=eps)`
  (Szegedy et al. 2016, arXiv:1512.00567).

This file travels as remote code next to saved checkpoints (the modeling file imports it with a
single-dot relative import), so it imports only torch and the standard library.
"""

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _z_loss(s: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return lse.square()


def _label_smoothing(s: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # (1 - eps) * nll + eps * (lse - mean(s)) == nll + eps * (s[y] - mean(s))
    return s.gather(1, targets[:, None])[:, 0] - s.mean(dim=-1)


# name -> per-position value (N,) from capped logits s (N, V) float32, lse (N,) and targets (N,)
LOSS_TERMS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "z_loss": _z_loss,
    "label_smoothing": _label_smoothing,
}


def active_terms(terms: dict[str, float] | None) -> dict[str, float]:
    """The terms with a non-zero coefficient; an unknown name raises with the known ones."""
    active = {}
    for name, coef in (terms or {}).items():
        if name not in LOSS_TERMS:
            raise ValueError(f"unknown loss term {name!r}; known terms: {', '.join(LOSS_TERMS)}")
        if coef:
            active[name] = float(coef)
    return active


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """Hugging Face `labels` (aligned with input_ids) -> next-token targets: (B, T) -> (B, T), last = -100."""
    return F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]


def _count(num_items, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The loss's divisor as a 0-d tensor of the loss dtype: `num_items`, or the number of counted targets
    (0 when none: the mean is then NaN, as `F.cross_entropy`'s and transformers' `ForCausalLMLoss`)."""
    if num_items is None:
        return mask.sum().to(dtype)
    if torch.is_tensor(num_items):
        return num_items.to(device=mask.device, dtype=dtype)
    return torch.tensor(float(num_items), device=mask.device, dtype=dtype)


def _term_values(s, lse, y, mask, terms: dict[str, float]) -> dict[str, torch.Tensor]:
    """Each term's coefficient x value, summed over the counted positions (scalars)."""
    return {name: coef * (LOSS_TERMS[name](s, lse, y) * mask).sum() for name, coef in terms.items()}


# ----------------------------------------------------------------------------- the plain path
def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, num_items=None, terms: dict[str, float] | None = None,
                   vocab_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, parts) from logits (..., V') already soft-capped and targets (...) (-100 = ignored).

    `vocab_size` crops the logits to the real vocabulary first (V' may be padded); `terms` maps names
    of `LOSS_TERMS` to coefficients. Without extra terms this is `F.cross_entropy(reduction="sum") /
    num_items`, the computation of transformers' `ForCausalLMLoss`.
    """
    V = vocab_size or logits.shape[-1]
    s = logits[..., :V].reshape(-1, V)
    s = s.to(torch.promote_types(s.dtype, torch.float32))  # (N, V), at least float32
    y = targets.reshape(-1).to(s.device)
    mask = y != IGNORE_INDEX
    n = _count(num_items, mask, s.dtype)
    terms = active_terms(terms)
    if not terms:
        loss = F.cross_entropy(s, y, ignore_index=IGNORE_INDEX, reduction="sum") / n
        return loss, {"ce": loss.detach()}
    y0 = torch.where(mask, y, 0)
    lse = torch.logsumexp(s, dim=-1)  # (N,)
    ce = ((lse - s.gather(1, y0[:, None])[:, 0]) * mask).sum() / n
    extra = {name: value / n for name, value in _term_values(s, lse, y0, mask, terms).items()}
    loss = ce + sum(extra.values())
    return loss, {"ce": ce.detach(), **{k: v.detach() for k, v in extra.items()}}


# ----------------------------------------------------------------------------- the fused path
def chunk_rows(rows: int, width: int, vocab: int, device: torch.device) -> int:
    """Positions per block. CPU: about 2^21 float32 logits (8 MiB, the size that measured fastest at
    vocab 8192 on the 2-core build machine: blocks that fit the last-level cache, matmuls still large).
    GPU: blocks whose logits are about as large as the hidden states (Liger-Kernel's rule), so a few
    large matmuls cover the batch."""
    if device.type == "cpu":
        return max(16, (1 << 21) // max(vocab, 1))
    blocks = -(-vocab // width)  # ceil(V / d)
    return max(16, 1 << max(0, (-(-rows // blocks) - 1).bit_length()))  # next power of two of rows / blocks


def grad_group_rows(chunk: int, rows: int, vocab: int, device: torch.device) -> int:
    """Positions per product of the head's gradient when it accumulates in float32 from bf16 blocks.

    Each (V, d) product then costs a mixed-dtype add over the whole head (a bf16 -> float32 pass of 8 MiB
    at the bench's sizes, measured at 3.6 ms per block inside the step on a CPU, 6% of the step for 8
    blocks), so on a CPU the bf16 gradient blocks are kept for a group of about 2^23 logits (16 MiB) and
    multiplied once per group. A GPU does the add at its bandwidth: one block per product."""
    if device.type != "cpu":
        return chunk
    return max(chunk, min(rows, (1 << 23) // max(vocab, 1)) // chunk * chunk)


# A softcapped logit lies in [-c, c], so exp(s - c) can neither overflow nor (for c up to this bound, where
# exp(-2c) > 1e-26 stays far from float32's subnormals) underflow: the softmax then needs no max pass.
_CONSTANT_MAX_SOFTCAP = 30.0


# CPU only, per thread (two threads may compute losses at once): the blocks of the last call,
# {(rows, vocab, dtypes): blocks}, reused by the next call of that size.
_CPU_BLOCKS = threading.local()


def block_dtype(h: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    """The dtype of the loss blocks (`block_buffers`' first two): float32, or float64 for float64 inputs."""
    return torch.promote_types(torch.promote_types(h.dtype, w.dtype), torch.float32)


def block_buffers(h: torch.Tensor, w: torch.Tensor, rows: int, vocab: int, grad_dtype: torch.dtype | None = None,
                  grad_rows: int | None = None) -> tuple[torch.Tensor, ...]:
    """Reusable (rows, V) blocks: two for `_block` in the loss dtype (float32, or float64 for float64 inputs),
    and with `grad_dtype` (other than the loss dtype) a third, (grad_rows, V), for the gradient blocks cast
    to that dtype (`grad_rows` defaults to `rows`).

    A fresh 8 MiB tensor costs page faults on every first touch (measured: a new (256, 8192) product took
    41 ms where one written in place took 27 ms on the 2-core build machine), so the blocks are allocated
    once per call and overwritten; on a CPU, where no caching allocator keeps freed memory mapped, they are
    also kept for the next call of the same size (one entry: a new size replaces it).
    """
    dtype = block_dtype(h, w)
    shapes = [(rows, dtype), (rows, dtype)]
    if grad_dtype not in (None, dtype):
        shapes.append((grad_rows or rows, grad_dtype))
    if h.device.type != "cpu":
        return tuple(torch.empty(n, vocab, dtype=d, device=h.device) for n, d in shapes)
    key = (vocab, *shapes)
    cached = getattr(_CPU_BLOCKS, "blocks", {})
    if key not in cached:
        cached = _CPU_BLOCKS.blocks = {key: tuple(torch.empty(n, vocab, dtype=d) for n, d in shapes)}
    return cached[key]


def _block(h, w, y, mask, softcap, terms, want_grad, scale, bufs):
    """One block of positions: h (n, d), w (V, d) -> (ce sum, term sums, gradient or None).

    The gradient of z (n, V) is a pair (g, r): g itself when r is None, else g * r[:, None] (r (n,) is
    the per-row factor, left for the caller to apply on the small sides of its matmuls).

    `w` is the head already divided by the softcap c (so the matmul gives z / c and the cap is one tanh
    in place), h and w in the matmul's dtype (`head_operands`), autocast off; `bufs[:2]` are two (>= n, V)
    blocks from `block_buffers`, overwritten. Loss and gradient of the cross-entropy through the softcap
    take seven passes over the (n, V) block in place (upcast, tanh, shift, exp, sum, 1 - t^2, product; the
    caller applies the row factor to the (n, d) sides of its matmuls), where autograd would keep a graph of
    several (n, V) tensors; extra terms go through autograd on the block.
    """
    n = h.shape[0]
    zbuf, sbuf = bufs[0][:n], bufs[1][:n]
    if h.dtype == w.dtype == zbuf.dtype:
        z = torch.mm(h, w.t(), out=zbuf)  # (n, V) z / c, written in place
    else:  # a bf16 matmul (h and w already cast, see `head_operands`); upcast into the block
        z = zbuf.copy_(torch.mm(h, w.t()))
    y0 = torch.where(mask, y, 0)
    rows = torch.arange(n, device=z.device)
    if softcap is not None:
        t = z.tanh_()  # tanh(z / c) in place, kept for the derivative 1 - t^2
        s_y = t[rows, y0] * softcap  # (n,) target logits
    else:
        t, s_y = None, z[rows, y0]
    # the capped logits s (n, V), written only where needed: by the extra terms, or by a max pass
    constant_max = t is not None and softcap <= _CONSTANT_MAX_SOFTCAP
    s = None
    if terms or not constant_max:
        s = torch.mul(t, softcap, out=sbuf) if t is not None else z
    g_extra, sums = None, {}
    if terms:
        with torch.enable_grad():
            s_leaf = s.detach().requires_grad_(want_grad)
            values = _term_values(s_leaf, torch.logsumexp(s_leaf, dim=-1), y0, mask, terms)
            if want_grad:
                g_extra = torch.autograd.grad(sum(values.values()), s_leaf)[0].mul_(scale)
        sums = {k: v.detach() for k, v in values.items()}
    if constant_max:  # the bound c replaces the row max: exp(c t - c), unnormalised softmax, over s
        p = torch.add(z.new_full((), -softcap), t, alpha=softcap, out=sbuf).exp_()
        m = softcap
    else:
        m = s.amax(dim=-1, keepdim=True)  # (n, 1)
        p = s.sub_(m).exp_()  # unnormalised softmax, in place of s
        m = m[:, 0]
    total = p.sum(dim=-1)  # (n,)
    lse = m + total.log()
    ce = ((lse - s_y) * mask).sum()
    if not want_grad:
        return ce, sums, None
    row = mask * scale
    if g_extra is not None:  # d nll / d s = softmax - onehot(y), times mask / n per row; plus the terms'
        g = p.mul_((row / total)[:, None])
        g[rows, y0] -= row
        g.add_(g_extra)
        if t is not None:  # d s / d z = 1 - t^2: g - g * t^2
            g.addcmul_(g, t.mul_(t), value=-1.0)
        return ce, sums, (g, None)
    # Without terms the per-row factor r = mask / (n total) comes out: grad z = r (p - total onehot(y)) (1 - t^2).
    # The caller applies r to the (n, d) operand and product of its matmuls, saving a pass over the block.
    p[rows, y0] -= total
    if t is not None:
        p.mul_(torch.addcmul(p.new_ones(()), t, t, value=-1.0, out=t))  # 1 - t^2 written over t, then times p
    return ce, sums, (p, row / total)


def sum_blocks(h, w, y, mask, softcap, terms, chunk, bufs, dtype, scale=1.0, add_gradients=None):
    """(ce sum, {term: sum}) over blocks of `chunk` positions of h (N, d) through the head w (V, d) (both as
    `head_operands` gives them), accumulated in `dtype`, autocast off. With `add_gradients(i, g, r)` each
    block's gradient of z (scaled by `scale`, see `_block`) goes to it before the next block overwrites it."""
    ce = h.new_zeros((), dtype=dtype)
    sums = {name: ce.clone() for name in terms}
    with torch.autocast(h.device.type, enabled=False):  # dtypes are explicit here
        for i in range(0, h.shape[0], chunk):
            part, term_sums, grad = _block(h[i:i + chunk], w, y[i:i + chunk], mask[i:i + chunk], softcap, terms,
                                           add_gradients is not None, scale, bufs)
            ce += part
            for k, v in term_sums.items():
                sums[k] += v
            if add_gradients is not None:
                add_gradients(i, *grad)
    return ce, sums


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype autograd's backward matmuls would use: autocast's (bf16) when it is on, else the inputs'."""
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def head_operands(hidden: torch.Tensor, w: torch.Tensor, softcap: float | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """(hidden, w / c, dtype): the forward matmul's operands, cast once to the dtype autocast would use.

    Under autocast each block's `h @ w.T` would cast the whole (V, d) head again (autocast caches casts of
    leaf weights only, and `w / c` is not one): 8 casts of the 8 MiB head per step at the bench's sizes,
    measured as a fifth of the step on one CPU thread. The blocks then run with autocast off.
    """
    dtype = _matmul_dtype(hidden, w)
    w_cap = w / softcap if softcap is not None else w
    return hidden.to(dtype), w_cap.to(dtype), dtype


class _FusedLinearLoss(torch.autograd.Function):
    """(loss, ce, *terms) of hidden @ weight.T; the gradients are computed in forward, scaled in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, n, softcap, vocab_size, terms, chunk):
        # hidden (N, d), weight (V', d), targets (N,), n: the divisor (0-d float tensor)
        w = weight[:vocab_size]
        h_c, w_cap, cdtype = head_operands(hidden, w, softcap)  # the forward's: z / c straight from the matmul
        w_c = w.to(cdtype)  # the backward matmuls' head
        N = hidden.shape[0]
        mask = targets != IGNORE_INDEX
        grad_h = torch.empty_like(hidden)
        # float32 (at least) accumulation over blocks; rows >= vocab_size get no gradient. No zero fill: the
        # first product is written, the later ones add to it.
        grad_w = torch.empty(weight.shape, dtype=torch.promote_types(weight.dtype, torch.float32),
                             device=weight.device)
        grad_w[vocab_size:].zero_()
        gw = grad_w[:vocab_size]
        # Gradient blocks cast to the matmul dtype (bf16 under autocast) are kept in bufs[2] for a group of
        # `group` positions and multiplied into the head's gradient once per group; blocks already in that
        # dtype are their own group (group = chunk: one product per block, nothing kept).
        cast = block_dtype(hidden, w) != cdtype
        group = grad_group_rows(chunk, N, vocab_size, hidden.device) if cast else chunk
        bufs = block_buffers(hidden, w, min(chunk, N), vocab_size, cdtype, min(group, N))
        h_r = None if terms else torch.empty(min(group, N), hidden.shape[1], dtype=cdtype, device=hidden.device)

        def add_gradients(i: int, g: torch.Tensor, r: torch.Tensor | None) -> None:
            # grad z = diag(r) g: the row factor r (n,) goes on the small sides of the two matmuls,
            # (n, d) each, instead of a pass over the (n, V) block (a mixed-dtype multiply-and-cast
            # measured 3x slower than the plain cast on a CPU)
            m = g.shape[0]
            g0, k = i - i % group, i % group  # the group's first position, this block's offset in it
            if cast:  # into its rows of the kept group: no page faults
                g = bufs[2][k:k + m].copy_(g)
            if grad_h.dtype == cdtype and r is None:
                torch.mm(g, w_c, out=grad_h[i:i + m])  # (n, d), written in place
            else:
                grad_h[i:i + m] = torch.mm(g, w_c)
            if r is not None:
                grad_h[i:i + m].mul_(r[:, None].to(grad_h.dtype))
                h_r[k:k + m].copy_(hidden[i:i + m] * r[:, None])  # (n, d): diag(r) h
            if i + m < min(g0 + group, N):  # the group goes on: its product comes with its last block
                return
            # (V, d) (+)= (V, rows) @ (rows, d) over the group's rows
            gs = bufs[2][:i + m - g0] if cast else g
            hs = h_r[:i + m - g0] if r is not None else h_c[g0:i + m]
            if grad_w.dtype == gs.dtype:
                torch.mm(gs.t(), hs, out=gw) if g0 == 0 else gw.addmm_(gs.t(), hs)
            else:  # e.g. float64 hidden states with a float32 head
                product = torch.mm(gs.t(), hs)
                gw.copy_(product) if g0 == 0 else gw.add_(product)

        ce, sums = sum_blocks(h_c, w_cap, targets, mask, softcap, terms, chunk, bufs, grad_w.dtype, 1.0 / n,
                              add_gradients)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        parts = [ce / n, *(sums[k] / n for k in terms)]
        ctx.mark_non_differentiable(*parts)
        return (sum(parts), *parts)

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        grad_h, grad_w = ctx.saved_tensors
        # the loss is almost always the root (incoming gradient 1): skip two passes over (N, d) and (V', d).
        # Checked on the CPU only, where reading the value costs no device sync.
        if grad_loss.device.type == "cpu" and bool(grad_loss == 1):
            return grad_h, grad_w, None, None, None, None, None, None
        return grad_h * grad_loss, grad_w * grad_loss, None, None, None, None, None, None


@torch.compiler.disable  # a Python loop over blocks with autograd inside: keep it out of compiled graphs
def fused_causal_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, num_items=None,
                         terms: dict[str, float] | None = None, softcap: float | None = None,
                         vocab_size: int | None = None, chunk_size: int | None = None
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, parts) of `hidden` (..., d) through the LM head `weight` (V', d), without keeping logits.

    Same value as `causal_lm_loss(softcap(hidden @ weight.T), targets, ...)`; when gradients are
    enabled, those of `hidden` and `weight` are exact up to float rounding (tested against the plain
    path). `vocab_size` crops the head to its first V rows before the softcap (a vocabulary padded to a
    multiple of 64 keeps its unused rows out of the softmax); `chunk_size` is positions per block.
    """
    d = hidden.shape[-1]
    h = hidden.reshape(-1, d)
    y = targets.reshape(-1).to(h.device)
    if h.shape[0] != y.shape[0]:
        raise ValueError(f"fused loss: {h.shape[0]} positions of hidden states but {y.shape[0]} targets")
    V = vocab_size or weight.shape[0]
    terms = active_terms(terms)
    chunk = chunk_size or chunk_rows(h.shape[0], d, V, h.device)
    mask = y != IGNORE_INDEX
    n = _count(num_items, mask, torch.promote_types(h.dtype, torch.float32))
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        loss, *parts = _FusedLinearLoss.apply(h, weight, y, n, softcap, V, terms, chunk)
        return loss, dict(zip(("ce", *terms), parts))
    bufs = block_buffers(h, weight, min(chunk, h.shape[0]), V)
    h, w, _ = head_operands(h, weight[:V], softcap)
    ce, sums = sum_blocks(h, w, y, mask, softcap, terms, chunk, bufs, bufs[0].dtype)
    parts = {"ce": ce / n, **{k: v / n for k, v in sums.items()}}
    return sum(parts.values()), parts
