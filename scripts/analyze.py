"""Look inside a model: attention heatmaps, parameter statistics, the nanoGPT sizes' parameters and memory.

    python scripts/analyze.py attention --model base --text "def fibonacci(n):"           # a grid per layer
    python scripts/analyze.py attention --model out/base --text "..." --layer 1 --head 0   # one large panel
    python scripts/analyze.py params --model sft                      # per-tensor table, totals by role, histogram
    python scripts/analyze.py sizes                                   # nanoGPT micro/small/medium: params, memory

attention: weights from `output_attentions=True` with the eager kernel; one PNG per layer (a panel
per head), `--layer L` for one layer, `--head H` for one head in every layer, both for one panel;
grey cells are positions the query cannot see (the future; outside the window on sliding layers).
params: prints the markdown table and writes `params.md` and `params_hist.png`.
sizes: peak memory of one training step counted on fake tensors (see hf_nanogpt/analysis/params.py).
PNGs and tables go to `--output_dir` (default: $HF_NANOGPT_BASE_DIR/analysis/<model folder name>).
"""

import argparse
import sys
from pathlib import Path

from hf_nanogpt.cli import run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("attention", "attention heatmaps for a text"), ("params", "parameter statistics")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model", "-i", required=True, help="model folder, or a stage name (base, mid, sft)")
        p.add_argument("--output_dir", type=Path, default=None, help="where to write (default: see above)")
    attention = sub.choices["attention"]
    attention.add_argument("--text", required=True, help="the text whose attention to draw")
    attention.add_argument("--layer", type=int, default=None, help="only this layer (0-based)")
    attention.add_argument("--head", type=int, default=None, help="only this head (0-based)")
    attention.add_argument("--no_bos", action="store_true", help="do not put <|bos|> before the text")
    sizes = sub.add_parser("sizes", help="parameters and training memory of nanoGPT's micro/small/medium models")
    sizes.add_argument("--output_dir", type=Path, default=None, help="also write sizes.md here")
    return parser.parse_args(argv)


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    from hf_nanogpt.analysis.params import sizes_markdown

    if args.command == "sizes":
        table = sizes_markdown()
        print(table)
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            (args.output_dir / "sizes.md").write_text(table)
            return [args.output_dir / "sizes.md"]
        return []

    from hf_nanogpt.paths import base_dir, load_model_and_tokenizer, resolve_stage

    try:
        folder = resolve_stage(args.model)
    except FileNotFoundError as err:
        sys.exit(f"analyze: {err}")
    model, tokenizer = load_model_and_tokenizer(folder)
    out = args.output_dir or base_dir() / "analysis" / folder.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "params":
        from hf_nanogpt.analysis.params import parameter_stats, plot_histograms, stats_markdown

        table = stats_markdown(parameter_stats(model), title=f"Parameters of {folder}")
        print(table)
        (out / "params.md").write_text(table)
        plot_histograms(model, out / "params_hist.png")
        written = [out / "params.md", out / "params_hist.png"]
    else:
        from hf_nanogpt.analysis.attention import attention_maps, plot_attention

        try:
            _, labels, weights = attention_maps(model, tokenizer, args.text, add_bos=not args.no_bos)
            windows = getattr(model.config, "window_sizes", None) or [None] * len(weights)
            written = plot_attention(weights, labels, windows, out, layer=args.layer, head=args.head)
        except ValueError as err:
            sys.exit(f"analyze: {err}")
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    run_script(main)
