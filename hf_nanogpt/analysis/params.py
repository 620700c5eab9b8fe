"""Parameter statistics and training memory of a model (`scripts/analyze.py params` / `sizes`).

- `parameter_stats(model)`: one row per tensor (shape, count, mean, std, min, max, fraction of exact
  zeros) with its role, the optimizer's own classification (`optim.classify_parameters`):
  embeddings, value embeddings (nanochat's per-layer value tables), matrices (the 2-D weights inside the
  blocks, Muon's, the value-embedding gates included), head (absent when tied), scalars (norm weights,
  biases, the residual/x0 lambdas, smear gate and lambda, backout lambda: the small AdamW groups). The
  roles sum as `NanoGPTForCausalLM.parameter_counts()` counts. A tied tensor is listed once.
- `stats_markdown(rows)`: the table plus totals by role; `plot_histograms(model, path)`: a value
  histogram per role.
- `training_memory(config, batch_size, seq_len)`: peak tensor memory of one training step (forward,
  backward, `MuonAdamW` step, with the optimizer state of an earlier step in place), counted by
  torch's `MemTracker` while the whole step runs on fake tensors (`FakeTensorMode`): every
  allocation is accounted, none is made, so a 124M model at batch 12 x 1024 is measured in seconds
  on a laptop. Float32 weights, CPU kernels (the attention kernel is the one the CPU would run).
- `NANOGPT_SIZES`: three nanoGPT reference models, micro to medium (README table).
"""

import math
from dataclasses import dataclass

import torch

from ..optim import classify_parameters

# optimizer group (optim.GROUP_NAMES, every one) -> role shown in the table; the smear gate is 2-D but tiny
# and outside the blocks, so, as in parameter_counts(), it is a scalar, not a matrix
ROLES = {"embedding": "embeddings", "value_embedding": "value embeddings", "matrix": "matrices", "lm_head": "head",
         "resid": "scalars", "x0": "scalars", "smear": "scalars", "scalar": "scalars", "adapter": "adapters"}
ROLE_ORDER = ("embeddings", "value embeddings", "matrices", "head", "scalars", "adapters")


@dataclass(frozen=True)
class NanoGPTSize:
    """A nanoGPT model and the batch it trains with (`model_args` as in its checkpoints)."""

    name: str
    source: str
    model_args: dict
    batch_size: int


# The three sizes nanoGPT's own examples use: its README's CPU run, the shakespeare_char "baby GPT",
# and GPT-2 small (config/train_gpt2.py). nanoGPT's default bias is False.
NANOGPT_SIZES = (
    NanoGPTSize("micro", "README CPU example", dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False,
                                                    vocab_size=65, dropout=0.0), 12),
    NanoGPTSize("small", "train_shakespeare_char", dict(n_layer=6, n_head=6, n_embd=384, block_size=256, bias=False,
                                                        vocab_size=65, dropout=0.2), 64),
    NanoGPTSize("medium", "train_gpt2, GPT-2 124M", dict(n_layer=12, n_head=12, n_embd=768, block_size=1024,
                                                          bias=False, vocab_size=50304, dropout=0.0), 12),
)


def _roles(model) -> dict[int, str]:
    return {id(p): ROLES[group] for group, params in classify_parameters(model).items() for _, p in params}


@torch.no_grad()
def parameter_stats(model) -> list[dict]:
    """One dict per tensor: name, role, shape, count, mean, std, min, max, zeros (fraction of exact 0)."""
    roles = _roles(model)
    rows = []
    for name, p in model.named_parameters():  # shared (tied) tensors appear once
        x = p.detach().float()
        rows.append(dict(name=name, role=roles.get(id(p), "frozen"), shape=tuple(p.shape), count=p.numel(),
                         mean=x.mean().item(), std=x.std().item() if p.numel() > 1 else 0.0, min=x.min().item(),
                         max=x.max().item(), zeros=(x == 0).float().mean().item()))
    return rows


def role_totals(rows: list[dict]) -> dict[str, int]:
    """Parameter count per role (in ROLE_ORDER) plus `total`."""
    totals = {role: sum(r["count"] for r in rows if r["role"] == role) for role in ROLE_ORDER}
    totals = {k: v for k, v in totals.items() if v or k in ("embeddings", "matrices", "head", "scalars")}
    totals["total"] = sum(r["count"] for r in rows)
    return totals


def _num(x: float) -> str:
    return f"{x:.3g}" if x != 0 else "0"


def stats_markdown(rows: list[dict], title: str = "Parameters") -> str:
    """The per-tensor table and the totals by role, as markdown."""
    totals = role_totals(rows)
    lines = [f"## {title}", "", "| tensor | role | shape | count | mean | std | min | max | zeros |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shape = " x ".join(map(str, r["shape"])) or "scalar"
        lines.append(f"| `{r['name']}` | {r['role']} | {shape} | {r['count']:,} | {_num(r['mean'])} | {_num(r['std'])} "
                     f"| {_num(r['min'])} | {_num(r['max'])} | {r['zeros']:.1%} |")
    lines += ["", "| role | parameters | share |", "|---|---:|---:|"]
    for role, n in totals.items():
        share = n / totals["total"] if totals["total"] else 0.0
        label = f"**{role}**" if role == "total" else role
        lines.append(f"| {label} | {n:,} | {share:.1%} |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def plot_histograms(model, path, bins: int = 100, max_values: int = 2_000_000) -> None:
    """A PNG with one histogram of parameter values per role (log-scale counts). Roles with more than
    `max_values` values are subsampled at a fixed stride (the shape of the distribution survives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = _roles(model)
    values: dict[str, list[torch.Tensor]] = {}
    for _, p in model.named_parameters():
        values.setdefault(roles.get(id(p), "frozen"), []).append(p.detach().float().flatten())
    present = [r for r in (*ROLE_ORDER, "frozen") if r in values]
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, role in zip(axes[0], present):
        x = torch.cat(values[role])
        stride = max(1, math.ceil(x.numel() / max_values))
        x = x[::stride]
        ax.hist(x.numpy(), bins=bins, color="tab:blue", log=True)
        ax.set_title(f"{role}: {sum(v.numel() for v in values[role]):,} values" + (f" (1 in {stride})" if stride > 1 else ""))
        ax.set_xlabel("value")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("count (log)")
    fig.suptitle(f"{type(model).__name__}: parameter values by role")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def step_memory(model, optimizer, input_ids) -> dict[str, int]:
    """Peak bytes of one training step (forward, backward, optimizer step) on `input_ids` (B, T), by category
    (parameters, gradients, optimizer state, activations, temporaries) and `total`, as torch's `MemTracker`
    counts them. A first, untracked step creates the optimizer state, as it exists in every later step."""
    from torch.distributed._tools.mem_tracker import MemTracker

    def step():
        model(input_ids=input_ids, labels=input_ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    tracker = MemTracker()
    tracker.track_external(model, optimizer)
    with tracker:
        step()
    (device_peak,) = tracker.get_tracker_snapshot("peak").values()
    names = {"Parameter": "parameters", "Gradient": "gradients", "Optstate": "optimizer", "Activation": "activations",
             "Temp": "temporaries"}
    # keys are MemTracker's category enums (str-valued) plus the string "Total"
    out = {names[getattr(k, "value", k)]: v for k, v in device_peak.items() if getattr(k, "value", k) in names}
    out["total"] = device_peak["Total"]
    return out


def training_memory(config, batch_size: int, seq_len: int) -> dict[str, int]:
    """`step_memory` of `NanoGPTForCausalLM(config)` with `MuonAdamW` at `batch_size` x `seq_len` tokens,
    run on fake tensors: every allocation is counted, none is made."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ..modeling_nanogpt import NanoGPTForCausalLM
    from ..optim import build_optimizer

    with FakeTensorMode():
        model = NanoGPTForCausalLM(config).train()
        x = torch.randint(0, config.vocab_size, (batch_size, seq_len))
        return step_memory(model, build_optimizer(model), x)


def sizes_markdown(sizes=NANOGPT_SIZES) -> str:
    """Parameters by role and training-step memory of each nanoGPT size, as a markdown table."""
    from ..convert_nanogpt import nanogpt_config
    from ..modeling_nanogpt import NanoGPTForCausalLM

    lines = ["| size (nanoGPT example) | layers x heads x width, context | vocab | parameters | embeddings | matrices "
             "| scalars | batch x context | peak training memory | activations at the peak |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for s in sizes:
        a = s.model_args
        config = nanogpt_config(a)
        with torch.device("meta"):
            counts = NanoGPTForCausalLM(config).parameter_counts()
        mem = training_memory(config, s.batch_size, a["block_size"])
        lines.append(f"| {s.name} ({s.source}) | {a['n_layer']} x {a['n_head']} x {a['n_embd']}, {a['block_size']} "
                     f"| {a['vocab_size']:,} | {counts['total'] / 1e6:.2f}M | {counts['embedding'] / 1e6:.2f}M "
                     f"| {counts['matrices'] / 1e6:.2f}M | {counts['scalars']:,} | {s.batch_size} x {a['block_size']} "
                     f"| {mem['total'] / 2**20:,.0f} MiB | {mem['activations'] / 2**20:,.0f} MiB |")
    return "\n".join(lines) + "\n"


__all__ = ["NANOGPT_SIZES", "NanoGPTSize", "ROLE_ORDER", "parameter_stats", "plot_histograms", "role_totals",
           "sizes_markdown", "stats_markdown", "step_memory", "training_memory"]
