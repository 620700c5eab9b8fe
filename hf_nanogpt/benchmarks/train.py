"""Training-step benchmark: our model + optimizer against what a user would pick instead.

Tokens per second, MFU and peak memory of a full training step (forward, backward, optimizer step) of:

1. `NanoGPTForCausalLM` (the `--preset` family) with `MuonAdamW` (Muon for the block matrices), the loss
   through the path the training loop uses (`skip_logits=True`: fused, blocked head + crop + softcap +
   cross-entropy, no (B, T, V) logits);
2. the same model with `torch.optim.AdamW` on every parameter (isolates the optimizer's cost);
3. transformers' `LlamaForCausalLM` of matched size (same vocabulary, width, depth, heads and context;
   its SwiGLU MLP gets `intermediate_size = 8/3 * width` so both MLPs hold the same weights) with
   `torch.optim.AdamW`: the baseline.

Each runs eager and under `torch.compile` (`--compile eager|compiled|both`), and with `--fp8` our model
also with torchao's float8 training (every block Linear; the head stays bf16; CUDA with compute
capability >= 8.9; `pip install torchao`, the `fp8` extra; compiled, as torchao intends, unless
`--compile eager`). MFU uses nanochat's convention for every
contender: 6 x (parameters that do matmuls) + 12 x heads x head_dim x seq_len x layers FLOPs per token,
over the dense bf16 peak of the GPU (`hf_nanogpt.training.GPU_PEAKS`, H100/H200 included), or a
measured float32 matmul rate on a CPU; FP8 runs are reported against the same bf16 peak (as nanochat).

Each contender runs in its own process (peak memory is then its own: `torch.cuda.max_memory_allocated`
on a GPU, the growth of the process's peak RSS on a CPU); after warm-up steps (compilation included) it
times `--windows` windows of `--steps` steps and the best window counts; `--repeats` runs the whole
list again round-robin (best kept), which keeps the ratios meaningful on a noisy machine. Ratios are
against Llama + AdamW eager: tokens/s > 1 and memory < 1 favour us.

    python scripts/bench.py train                                   # CPU, default sizes, ~5 minutes
    python scripts/bench.py train --compile eager                   # skip the compiled runs (faster)
    python scripts/bench.py train --compile eager --accum 2         # tiny.yaml's step: 2 x 2,048 tokens per update
    python scripts/bench.py train --device cuda --size d12 --fp8  # one GPU: d12 at seq 2048
    python scripts/bench.py train --device cuda --size d20 --compile compiled --fp8 --json d20.json
"""

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch

MODELS = ("nanogpt+muon", "nanogpt+adamw", "llama+adamw")
BASELINE = "llama+adamw"
# nanochat's sizes at seq 2048: (depth, head_dim, vocab, seq_len, batch per step)
SIZES = {"d12": (12, 128, 32768, 2048, 16), "d20": (20, 128, 32768, 2048, 16)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="nanochat size at seq 2048 (sets depth, head_dim, vocab_size, seq_len, batch)")
    parser.add_argument("--depth", type=int, default=4, help="model depth (NanoGPTConfig.from_depth)")
    parser.add_argument("--preset", default="nanochat_jan2026", choices=("nanochat", "nanochat_jan2026"),
                        help="model family (NanoGPTConfig.from_depth preset); the default, the January-2026 layout, "
                             "has a parameter-matched Llama; nanochat master adds value embeddings Llama lacks")
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--accum", type=int, default=1,
                        help="micro-batches per optimizer step (gradient accumulation): the optimizer's cost is per "
                             "step, so Muon's share shrinks as tokens per step grow (recipes/tiny.yaml trains with 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per run; the best counts")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (compilation happens here)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the whole list, round-robin; the best counts")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--compile", choices=("eager", "compiled", "both"), default="both",
                        help="eager runs, torch.compile runs, or both (ours with Muon and the Llama baseline)")
    parser.add_argument("--fp8", action="store_true", help="also run ours with torchao float8 training (CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="autocast dtype of every contender; auto = the training loop's rule: bfloat16 on "
                             "GPUs and on CPUs with native bf16 matmuls (AVX512-BF16, AMX), float32 elsewhere")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (0: torch's default). One by default: on a shared machine "
                             "OpenMP threads waiting for each other make 2-thread steps erratic")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the contenders, sizes and FLOPs per token (models built on the meta device), "
                             "run nothing")
    args = parser.parse_args(argv)
    if args.size:
        args.depth, args.head_dim, args.vocab_size, args.seq_len, args.batch = SIZES[args.size]
    if BASELINE not in args.models:
        parser.error(f"--models must include the baseline {BASELINE}")
    if args.fp8 and not args.device.startswith("cuda"):
        parser.error("--fp8 needs a CUDA device (torchao float8 matmuls run on compute capability >= 8.9)")
    if min(args.steps, args.windows, args.repeats, args.accum) < 1 or args.warmup < 0:
        parser.error("--steps, --windows, --repeats and --accum must be >= 1 and --warmup >= 0")
    return args


def contenders(args) -> list[tuple[str, bool, bool]]:
    """(model, compiled, fp8) runs in order; the first is the baseline (Llama eager is always run)."""
    modes = {"eager": [False], "compiled": [True], "both": [False, True]}[args.compile]
    runs = [(BASELINE, False, False)]
    runs += [(m, c, False) for c in modes for m in args.models
             if (m, c, False) not in runs and (not c or m in ("nanogpt+muon", BASELINE))]
    if args.fp8:  # float8 pays off compiled (torchao fuses its casts there); eager only if nothing is compiled
        runs.append(("nanogpt+muon", modes[-1], True))
    return runs


def llama_flops_per_token(model, seq_len: int) -> int:
    """nanochat's convention for a `LlamaForCausalLM`: 6 x the parameters that do matmuls (all but the
    token embedding; the untied head counts) plus 12 x heads x head_dim x seq_len per layer, the formula
    of `NanoGPTForCausalLM.flops_per_token`."""
    c = model.config
    matmul_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return 6 * matmul_params + c.num_hidden_layers * 12 * c.num_attention_heads * c.head_dim * seq_len


def build(kind: str, args, device=None):
    """(model, optimizer, FLOPs per token) of one contender, on `device` (default `--device`), in train mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ..configuration_nanogpt import NanoGPTConfig
    from ..modeling_nanogpt import NanoGPTForCausalLM
    from ..optim import build_optimizer

    cfg = NanoGPTConfig.from_depth(args.depth, head_dim=args.head_dim, vocab_size=args.vocab_size, preset=args.preset,
                                   max_position_embeddings=args.seq_len)
    if kind.startswith("nanogpt"):
        model = NanoGPTForCausalLM(cfg)
        flops = model.flops_per_token(args.seq_len)
    else:
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=8 * cfg.hidden_size // 3,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
            max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=False))
        flops = llama_flops_per_token(model, args.seq_len)
    model = model.to(device or args.device).train()
    if kind == "nanogpt+muon":
        opt = build_optimizer(model)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0)
    return model, opt, flops


def to_float8(model):
    """torchao float8 training for every Linear inside the blocks (the LM head stays in bf16)."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as err:
        raise RuntimeError("--fp8 needs torchao: pip install torchao (or the fp8 extra of hf_nanogpt)") from err

    def keep(module, name: str) -> bool:  # float8 matmuls need both dims divisible by 16
        return "lm_head" not in name and module.in_features % 16 == 0 and module.out_features % 16 == 0

    return convert_to_float8_training(model, config=Float8LinearConfig(), module_filter_fn=keep)


def _worker(run: tuple[str, bool, bool], args, queue) -> None:
    kind, compiled, fp8 = run
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    device = torch.device(args.device)
    dtype = autocast_dtype(args)
    model, opt, flops_per_token = build(kind, args)
    params = sum(p.numel() for p in model.parameters())
    if fp8:
        model = to_float8(model)
    if compiled:
        model = torch.compile(model)
    x = torch.randint(0, args.vocab_size, (args.batch, args.seq_len + 1), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():  # one optimizer step: --accum micro-batches of (batch, seq_len), then the update
        for _ in range(args.accum):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                if kind.startswith("nanogpt"):  # the training loop's call: loss only, fused head
                    loss = model(input_ids=x[:, :-1], shift_labels=x[:, 1:], use_cache=False, skip_logits=True).loss
                else:
                    loss = model(input_ids=x[:, :-1], labels=x[:, :-1], use_cache=False).loss
            (loss / args.accum).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(args.windows):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        best = min(best, time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in KiB on Linux: growth of this process's peak since start-up
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    tokens = args.steps * args.accum * args.batch * args.seq_len  # per timed window
    queue.put(dict(tokens_per_s=tokens / best, peak_mb=peak_mb, params=params,
                   flops_per_token=flops_per_token, warmup_s=warmup_s))


def autocast_dtype(args) -> torch.dtype | None:
    """The contenders' autocast dtype (None: float32); `auto` is the training loop's `dtype: auto` rule."""
    from ..training import auto_mixed_precision

    if args.dtype == "auto":
        return torch.bfloat16 if auto_mixed_precision(torch.device(args.device).type) == "bf16" else None
    return {"float32": None, "bfloat16": torch.bfloat16}[args.dtype]


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak."""
    return flops_per_token * tokens_per_s / peak_flops


def label(run: tuple[str, bool, bool]) -> str:
    kind, compiled, fp8 = run
    return kind + (" fp8" if fp8 else "") + (" compiled" if compiled else "")


def dry_run(args) -> str:
    """The plan of a run without running it: contenders, parameters, FLOPs per token, the MFU peak."""
    from ..training import device_peak_flops

    device = torch.device(args.device)
    dtype = autocast_dtype(args) or torch.float32
    peak = device_peak_flops(device, dtype)[1] if device.type == "cpu" or torch.cuda.is_available() else \
        f"{args.device} absent here: the GPU's entry of hf_nanogpt.training.GPU_PEAKS"
    lines = [f"train benchmark plan: depth {args.depth}, head_dim {args.head_dim}, batch {args.batch} x {args.seq_len}, "
             f"vocab {args.vocab_size}, {args.device}; MFU peak: {peak}"]
    for r in contenders(args):
        with torch.device("meta"):
            model, _, flops = build(r[0], args, device="meta")
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"  {label(r):<28} {params:>14,} params {flops:>16,} FLOPs/token "
                     f"{flops * args.batch * args.seq_len / 1e12:>9.2f} TFLOP/step")
    return "\n".join(lines)


def run(args) -> dict[str, dict]:
    """Best result of each contender: {label: {tokens_per_s, peak_mb, params, flops_per_token, mfu, ...}}."""
    from ..training import device_peak_flops

    peak, peak_source = device_peak_flops(torch.device(args.device), autocast_dtype(args) or torch.float32)
    ctx = mp.get_context("spawn")
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for r in contenders(args):
            queue = ctx.Queue()
            proc = ctx.Process(target=_worker, args=(r, args, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0 or queue.empty():
                raise RuntimeError(f"bench train: the {label(r)} worker failed (exit code {proc.exitcode}); see above")
            result = queue.get()
            result["mfu"] = mfu(result["flops_per_token"], result["tokens_per_s"], peak)
            if label(r) not in best or result["tokens_per_s"] > best[label(r)]["tokens_per_s"]:
                best[label(r)] = result
    best["_peak"] = {"flops": peak, "source": peak_source}
    return best


def format_report(best: dict, args) -> str:
    base = best[BASELINE]
    accum = f" x {args.accum} micro-batches per optimizer step" if args.accum > 1 else ""
    dtype = {None: "float32", torch.bfloat16: "bf16 autocast"}[autocast_dtype(args)]
    lines = [f"train benchmark: depth {args.depth}, batch {args.batch} x {args.seq_len} tokens{accum}, vocab {args.vocab_size}, "
             f"{args.device}, {dtype}, best of {args.windows} windows of {args.steps} steps; MFU peak: {best['_peak']['source']}",
             "", "| contender | params | tokens/s | MFU | peak MB | warm-up s | speed vs llama | memory vs llama |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in best.items():
        if name.startswith("_"):
            continue
        lines.append(f"| {name} | {r['params']:,} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['peak_mb']:,.0f} | "
                     f"{r['warmup_s']:.1f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
                     f"{r['peak_mb'] / max(base['peak_mb'], 1e-9):.2f}x |")
    for name in [n for n in best if n.endswith(" compiled")]:
        eager = name[:-len(" compiled")]
        if eager in best:
            lines.append(f"\n{eager}: compiled / eager tokens/s = "
                         f"{best[name]['tokens_per_s'] / best[eager]['tokens_per_s']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    if args.dry_run:
        print(dry_run(args))
        return {}
    best = run(args)
    print(format_report(best, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": best}, f, indent=1)
    return best


if __name__ == "__main__":
    main()
