"""Plot a recipe's schedules before spending compute: lr multiplier, Muon momentum and Muon weight decay per step.

    python scripts/plot_schedule.py recipes/d20.yaml                       # -> out/schedule.png
    python scripts/plot_schedule.py recipes/tiny.yaml --lr_schedule=step --step_milestones=[0.5,0.8] \\
        --step_factors=[0.5,0.1] --output_dir out/step
    WORLD_SIZE=8 python scripts/plot_schedule.py recipes/d24.yaml      # the steps of an 8-process launch

The number of steps and the (transferred) Muon weight decay come from the recipe's plan, derived as
`scripts/pretrain.py --plan_only=true` does (no data read; mid/sft recipes need num_iterations). Recipe
keys override as --key=value.
"""

import argparse
import sys
from pathlib import Path

from hf_nanogpt.paths import base_dir
from hf_nanogpt.planning import plan_only
from hf_nanogpt.recipe import parse_recipe
from hf_nanogpt.schedules import Schedule


def plot(schedule: Schedule, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(schedule.num_iterations))
    rows = [schedule.at(s) for s in steps]
    fig, axes = plt.subplots(3, 1, figsize=(7, 6.5), sharex=True)
    panels = (("lr_mult", "lr multiplier", "C0"), ("momentum", "Muon momentum", "C1"),
              ("weight_decay", "Muon weight decay", "C2"))
    for ax, (key, label, color) in zip(axes, panels):
        ax.plot(steps, [r[key] for r in rows], color=color, lw=1.8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[-1].set_xlabel("optimizer step")
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s RECIPE [--output_dir DIR] [--key=value recipe overrides]")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help="where schedule.png goes (default $HF_NANOGPT_BASE_DIR)")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in rest):
        parser.print_help()
        raise SystemExit(0)
    recipe = parse_recipe(rest, description=__doc__)
    if recipe.stage == "base":
        plan = plan_only(recipe)["plan"]
        steps, wd = plan["num_iterations"], plan["weight_decay"]
    elif recipe.num_iterations > 0:  # a chat stage's length depends on its mixture; take it from the recipe
        steps, wd = recipe.num_iterations, recipe.weight_decay
    else:
        raise ValueError(f"stage {recipe.stage!r} recipe without num_iterations: its length comes from the mixture; "
                         "pass --num_iterations=N to plot it")
    schedule = Schedule.from_recipe(recipe, steps, wd)
    name = Path(rest[0]).stem if rest and not rest[0].startswith("--") else "defaults"
    title = (f"{name}: {steps} steps, lr {recipe.lr_schedule} (warmup {recipe.warmup_steps}), Muon wd {wd:.3g} "
             f"{recipe.weight_decay_schedule}")
    out = plot(schedule, (args.output_dir or base_dir()) / "schedule.png", title)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
