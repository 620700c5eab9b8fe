"""Architecture benchmark: dense vs Mixture of Experts vs Mamba-2 hybrid, trained side by side.

Each recipe (default: `tiny.yaml`, `tiny-moe.yaml`, `tiny-hybrid.yaml`: the same width, depth, data, batch,
seed and number of steps) is trained in its own process on the same tokenizer, and reports:

- val bits per byte at the end (the same validation tokens for every model);
- training tokens/s (real tokens over the training time, evaluations excluded);
- peak memory: the growth of the process's peak RSS during training on a CPU (its own process, so its
  own peak), `torch.cuda.max_memory_allocated` on a GPU;
- parameters: total, and active per token (an MoE layer runs k of its E experts).

Ratios are against the first recipe (the dense baseline). One run per recipe: bpb differences smaller than
run-to-run noise at this scale (a few thousandths) mean nothing; tokens/s on a shared machine are noisy too,
compare the ratios of one run.

    python scripts/bench.py arch                                   # CPU, 3 x 150 steps, ~15-25 minutes on 2 cores
    python scripts/bench.py arch --steps 50 --output_dir out/bench_arch
    python scripts/bench.py arch --recipes recipes/tiny.yaml recipes/tiny-moe.yaml
    python scripts/bench.py arch --steps 20 --eval_tokens 8192 --set total_batch_size=2048   # the README table
"""

import argparse
import json
import multiprocessing as mp
import os
import queue as queue_module
import resource
from pathlib import Path

RECIPES = ("recipes/tiny.yaml", "recipes/tiny-moe.yaml", "recipes/tiny-hybrid.yaml")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py arch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipe files; the first is the baseline")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per recipe (same for all)")
    parser.add_argument("--eval_tokens", type=int, default=32768, help="validation tokens of the final bpb")
    parser.add_argument("--output_dir", default="out/bench_arch",
                        help="runs, the shared tokenizer (trained once if missing) and results.json")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run, e.g. total_batch_size=2048")
    return parser.parse_args(argv)


def _train_one(path: str, args: argparse.Namespace, queue) -> None:
    """Child process: train `path` for `args.steps` steps; put its measurements on `queue`."""
    import torch

    from ..recipe import parse_recipe
    from ..training import finalize, prepare_stage, train

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    recipe = parse_recipe([path, f"--num_iterations={args.steps}", f"--output_dir={out / Path(path).stem}",
                           f"--tokenizer={out / 'tokenizer'}", "--eval_every=-1", "--save_every=-1",
                           f"--eval_tokens={args.eval_tokens}", "--core_metric_every=-1", "--sample_every=-1",
                           *(f"--{kv}" for kv in args.set)])
    stage = prepare_stage(recipe)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    summary = train(stage)
    model = stage.accelerator.unwrap_model(stage.model)
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    counts = model.parameter_counts()
    finalize(stage, summary)
    queue.put(dict(recipe=Path(path).stem, steps=summary["step"], tokens=stage.plan.total_tokens,
                   val_bpb=summary["val_bpb"], tokens_per_s=summary["tokens_per_s"], peak_mib=peak,
                   params_total=counts["total"], params_active=counts["active"],
                   flops_per_token=stage.plan.flops_per_token))


def _prepare_tokenizer(args: argparse.Namespace) -> None:
    """Train the shared stdlib tokenizer once (as the training loop would), before the timed runs."""
    folder = Path(args.output_dir) / "tokenizer"
    if folder.exists():
        return
    from ..data.corpus import iter_stdlib_texts
    from ..tokenization import train_tokenizer
    from ..training import STDLIB_TOKENIZER

    train_tokenizer(iter_stdlib_texts("train"), **STDLIB_TOKENIZER).save_pretrained(folder)


def table(rows: list[dict]) -> str:
    """A markdown table of the results with ratios to the first row."""
    base = rows[0]
    lines = ["| model | params total | params active | val bpb | tokens/s | x dense | peak MiB | x dense |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['params_total'] / 1e6:.2f} M | {r['params_active'] / 1e6:.2f} M | "
                     f"{r['val_bpb']:.4f} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f} | "
                     f"{r['peak_mib']:.0f} | {r['peak_mib'] / max(base['peak_mib'], 1e-9):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    _prepare_tokenizer(args)
    ctx = mp.get_context("spawn")  # a fresh interpreter per model: its own peak memory, no shared state
    rows = []
    for path in args.recipes:
        queue = ctx.Queue()
        proc = ctx.Process(target=_train_one, args=(path, args, queue))
        proc.start()
        while True:  # wait for the result, or for the child to die without one
            try:
                rows.append(queue.get(timeout=5))
                break
            except queue_module.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"{path}: the training process failed (exit code {proc.exitcode})") from None
        proc.join()
        print(f"{rows[-1]['recipe']}: val bpb {rows[-1]['val_bpb']:.4f}, {rows[-1]['tokens_per_s']:,.0f} tok/s",
              flush=True)
    (Path(args.output_dir) / "results.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
