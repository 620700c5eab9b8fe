"""Learning-rate range test: sweep one multiplier on every group's lr (Muon and AdamW together) and plot the loss.

    python scripts/lr_find.py recipes/tiny.yaml                                  # -> out/lr_find/lr_find.png + .json
    python scripts/lr_find.py recipes/tiny.yaml --num_steps 200 --start_mult 0.01 --end_mult 100 --output_dir runs/lrf
    python scripts/lr_find.py recipes/d12.yaml --num_steps 300 --device_batch_size=16   # recipe overrides follow

The multiplier grows exponentially from --start_mult to --end_mult over --num_steps optimizer steps of the
recipe's model, batch and data; the loss is smoothed (EMA 0.98, bias-corrected) and the sweep stops once it
exceeds 4x the best. Prints the suggested multiplier and the recipe lrs it gives (paste them as overrides).
Nothing but lr_find.json and lr_find.png is written: the swept model is thrown away.
"""

import argparse
import json
import sys
from pathlib import Path

from hf_nanogpt.lr_finder import lr_range_test, plot_lr_find
from hf_nanogpt.paths import base_dir
from hf_nanogpt.recipe import parse_recipe
from hf_nanogpt.training import configure_logging


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s RECIPE [--num_steps N --start_mult X --end_mult Y "
                                           "--output_dir DIR] [--key=value recipe overrides]")
    parser.add_argument("--num_steps", type=int, default=100, help="optimizer steps of the sweep (default 100)")
    parser.add_argument("--start_mult", type=float, default=1e-2, help="first multiplier (default 0.01)")
    parser.add_argument("--end_mult", type=float, default=1e2, help="last multiplier (default 100)")
    parser.add_argument("--output_dir", type=Path, default=None, help="where lr_find.json/.png go "
                                                                       "(default $HF_NANOGPT_BASE_DIR/lr_find)")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        raise SystemExit(0)
    recipe = parse_recipe(rest, description=__doc__, stage="base")
    configure_logging()
    result = lr_range_test(recipe, args.num_steps, args.start_mult, args.end_mult)
    out = args.output_dir or base_dir() / "lr_find"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_find.json").write_text(json.dumps(result, indent=1))
    plot_lr_find(result, out / "lr_find.png")
    lrs = " ".join(f"--{k}={v:.4g}" for k, v in result["recipe_lrs"].items())
    print(f"swept {len(result['multipliers'])} steps ({result['stopped']}); suggested lr multiplier "
          f"x{result['suggested_mult']:.3g} (minimum / 10: x{result['min_over_10']:.3g})\n"
          f"resulting recipe lrs: {lrs}\nwrote {out / 'lr_find.png'} and {out / 'lr_find.json'}")
    return result


if __name__ == "__main__":
    main()
