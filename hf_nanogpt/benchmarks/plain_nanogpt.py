"""nanoGPT's CPU Shakespeare run, timed on this machine without running nanoGPT's code or this project's.

`bench.py quality` needs nanoGPT's wall time here, and nanoGPT's code is not installed (it is not a package
and nothing downloads at run time). Its time is its computation: nanoGPT's `train.py` is a thin loop around
a plain PyTorch GPT-2, fp32 on CPUs. So this module builds that computation in plain PyTorch at the run's
exact shapes and optimizer (written here, not copied: no project code either, so none of this project's
kernels or overheads can flatter or burden the baseline), times `steps` training steps and nanoGPT's
evaluation batches, and extrapolates to the run's 2000 steps and 9 x 2 x 20 evaluation batches.

The estimate leaves out what nanoGPT also pays (imports, data memmaps, checkpoint saves, logging, and its
`Dropout(0.0)` modules), so it is a lower estimate of nanoGPT's run, never a flattering one for ours.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn


class PlainBlock(nn.Module):
    """Pre-norm GPT-2 block as nanoGPT has it: LayerNorm without bias, fused q/k/v, causal SDPA (PyTorch's
    flash kernel for CPUs), exact-erf GELU MLP of width 4d; biases only with `bias` (the CPU run has none)."""

    def __init__(self, d: int, n_head: int, bias: bool = False):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=bias), nn.LayerNorm(d, bias=bias)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d, bias=bias), nn.Linear(d, d, bias=bias)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=bias), nn.Linear(4 * d, d, bias=bias)

    def forward(self, x):
        B, T, d = x.shape
        # (B, T, 3d) -> three (B, H, T, d / H)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2)
                   for t in self.c_attn(self.ln_1(x)).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    """Token + learned position embeddings, `n_layer` blocks, final LayerNorm, head tied to the embedding;
    with targets the forward returns the cross-entropy over every position (nanoGPT's forward with targets),
    without them the (B, T, V) logits."""

    def __init__(self, n_layer: int, n_embd: int, n_head: int, block_size: int, vocab_size: int,
                 bias: bool = False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(PlainBlock(n_embd, n_head, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():  # nanoGPT's init: N(0, 0.02), residual outputs scaled down
            if p.dim() == 2:
                std = 0.02 / (2 * n_layer) ** 0.5 if name.endswith("_proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))  # (B, T, d)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V) float32
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def non_embedding_parameters(model: PlainGPT) -> int:
    """nanoGPT's printed parameter count: everything but the position table (0.80M for the CPU run)."""
    return sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()


def time_nanogpt_run(run: dict, steps: int = 200, warmup: int = 10, seed: int = 1337) -> dict:
    """Seconds per training step and per evaluation batch of nanoGPT's run `run` (n_layer, n_embd, n_head,
    block_size, vocab_size, batch_size, max_iters, eval_interval, eval_iters) in plain PyTorch on this
    machine's CPU with torch's current threads, and the run's extrapolated time `estimate_s`."""
    torch.manual_seed(seed)
    B, T, V = run["batch_size"], run["block_size"], run["vocab_size"]
    model = PlainGPT(run["n_layer"], run["n_embd"], run["n_head"], T, V)
    # nanoGPT's optimizer: AdamW, weight decay on the 2-D tensors only, betas 0.9/0.99 (foreach on CPUs)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    # a random stream of characters the size of Shakespeare's training split: the cost does not depend on it
    data = torch.randint(0, V, (1_000_000,))

    def batch():  # nanoGPT's get_batch: B random windows of T + 1 characters
        ix = torch.randint(len(data) - T - 1, (B,)).tolist()
        return (torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + T + 1] for i in ix]))

    def train_step():
        x, y = batch()
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    for _ in range(warmup):
        train_step()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    step_s = (time.perf_counter() - start) / steps
    model.eval()
    n_eval = max(1, steps // 4)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(n_eval):
            model(*batch()).item()
        eval_s = (time.perf_counter() - start) / n_eval
    # nanoGPT evaluates at step 0 and every eval_interval steps: eval_iters batches of each split
    eval_batches = (run["max_iters"] // run["eval_interval"] + 1) * 2 * run["eval_iters"]
    return {"step_s": step_s, "eval_batch_s": eval_s, "steps_timed": steps, "threads": torch.get_num_threads(),
            "parameters": non_embedding_parameters(model),
            "estimate_s": run["max_iters"] * step_s + eval_batches * eval_s}
