"""Training-step benchmark: our model + optimizer against what a user would pick instead.

Tokens per second and peak memory of a full training step (forward, backward, optimizer step) of:

1. `NanoGPTForCausalLM` (the `--preset` family) with `MuonAdamW` (Muon for the block matrices);
2. the same model with `torch.optim.AdamW` on every parameter (isolates the optimizer's cost);
3. transformers' `LlamaForCausalLM` of matched size (same vocabulary, width, depth, heads and context;
   its SwiGLU MLP gets `intermediate_size = 8/3 * width` so both MLPs hold the same weights) with
   `torch.optim.AdamW`: the baseline.

Each contender runs in its own process (peak memory is then its own: `torch.cuda.max_memory_allocated`
on a GPU, the growth of the process's peak RSS on a CPU), after warm-up steps; the contenders alternate
over `--rounds` and the best round counts, which keeps the ratios meaningful on a noisy machine.
Ratios are ours / baseline: tokens/s > 1 and memory < 1 favour us.

    python scripts/bench.py train                                     # CPU, ~1-2 minutes
    python scripts/bench.py train --device cuda --depth 12 --seq_len 2048 --batch 16 --dtype bfloat16
"""

import argparse
import multiprocessing as mp
import resource
import time

import torch

CONTENDERS = ("nanogpt+muon", "nanogpt+adamw", "llama+adamw")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4, help="model depth (NanoGPTConfig.from_depth)")
    parser.add_argument("--preset", default="nanochat_jan2026", choices=("nanochat", "nanochat_jan2026"),
                        help="model family (NanoGPTConfig.from_depth preset); the default, the January-2026 layout, "
                             "has a parameter-matched Llama; nanochat master adds value embeddings Llama lacks")
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="autocast dtype; auto = bfloat16 on cuda, float32 elsewhere")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    return parser.parse_args(argv)


def build(kind: str, args) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..configuration_nanogpt import NanoGPTConfig
    from ..modeling_nanogpt import NanoGPTForCausalLM
    from ..optim import build_optimizer

    cfg = NanoGPTConfig.from_depth(args.depth, head_dim=args.head_dim, vocab_size=args.vocab_size, preset=args.preset,
                                   max_position_embeddings=args.seq_len)
    if kind.startswith("nanogpt"):
        model = NanoGPTForCausalLM(cfg)
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=8 * cfg.hidden_size // 3,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=False))
    model = model.to(args.device).train()
    if kind == "nanogpt+muon":
        opt = build_optimizer(model)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    return model, opt


def _worker(kind: str, args, queue) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    device = torch.device(args.device)
    dtype = {"float32": None, "bfloat16": torch.bfloat16}.get(args.dtype) if args.dtype != "auto" else (
        torch.bfloat16 if device.type == "cuda" else None)
    model, opt = build(kind, args)
    x = torch.randint(0, args.vocab_size, (args.batch, args.seq_len + 1), device=device)
    params = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=x[:, :-1], shift_labels=x[:, 1:]).loss if kind.startswith("nanogpt") else \
                model(input_ids=x[:, :-1], labels=x[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    elapsed = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in KiB on Linux: growth of this process's peak since start-up
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    queue.put(dict(kind=kind, tokens_per_s=args.steps * args.batch * args.seq_len / elapsed, peak_mb=peak_mb,
                   params=params))


def run(args) -> dict[str, dict]:
    """Best round of each contender: {kind: {tokens_per_s, peak_mb, params}}."""
    ctx = mp.get_context("spawn")
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for kind in CONTENDERS:
            queue = ctx.Queue()
            proc = ctx.Process(target=_worker, args=(kind, args, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0 or queue.empty():
                raise RuntimeError(f"bench train: the {kind} worker failed (exit code {proc.exitcode}); see above")
            result = queue.get()
            if kind not in best or result["tokens_per_s"] > best[kind]["tokens_per_s"]:
                best[kind] = result
    return best


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    print(f"train benchmark: depth {args.depth}, batch {args.batch} x {args.seq_len} tokens, vocab "
          f"{args.vocab_size}, {args.device}, best of {args.rounds} rounds of {args.steps} steps")
    best = run(args)
    base = best["llama+adamw"]
    print(f"{'contender':<16}{'params':>12}{'tokens/s':>12}{'peak MB':>10}{'speed vs llama':>16}{'memory vs llama':>17}")
    for kind in CONTENDERS:
        r = best[kind]
        print(f"{kind:<16}{r['params']:>12,}{r['tokens_per_s']:>12,.0f}{r['peak_mb']:>10,.0f}"
              f"{r['tokens_per_s'] / base['tokens_per_s']:>15.2f}x{r['peak_mb'] / max(base['peak_mb'], 1e-9):>16.2f}x")
    return best


if __name__ == "__main__":
    main()
