"""Learning-rate range test (Smith 2015, arXiv:1506.01186; fastai's `lr_find`) over all optimizer groups at once.

Every group's lr is the recipe's peak lr times one multiplier that grows exponentially from `start_mult` to
`end_mult` over `num_steps` optimizer steps, so Muon and AdamW move together the way the recipe ties them.
The loss is smoothed with an exponential moving average (beta 0.98) divided by 1 - beta^(i+1) (bias
correction, so the first steps are not pulled towards 0); the sweep stops once the smoothed loss exceeds
`stop_factor` (4) times the best seen, or turns non-finite. The suggested multiplier is the point of steepest
descent of the smoothed loss against log(multiplier) before its minimum (where the loss still falls fastest);
the multiplier at the minimum divided by 10 (the classic rule) is reported next to it.

The model lives in memory only: nothing but `lr_find.json` and `lr_find.png` is written.
"""

import math
from dataclasses import replace
from pathlib import Path

from .clipping import clip_gradients
from .optim import apply_schedule

SMOOTHING = 0.98
STOP_FACTOR = 4.0


def multipliers(num_steps: int, start_mult: float, end_mult: float) -> list[float]:
    """The exponential sweep: start_mult x (end_mult / start_mult)^(i / (num_steps - 1))."""
    if num_steps < 2 or not 0 < start_mult < end_mult:
        raise ValueError(f"lr range test: need num_steps >= 2 and 0 < start_mult < end_mult, got {num_steps}, "
                         f"{start_mult}, {end_mult}")
    ratio = end_mult / start_mult
    return [start_mult * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average of `losses`."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(mults: list[float], smoothed: list[float]) -> dict:
    """{suggested_mult (steepest descent before the minimum), min_mult, min_over_10} of a finished sweep."""
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    logs = [math.log(m) for m in mults]

    def slope(i: int) -> float:  # d smoothed / d log(multiplier), central difference
        return (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])

    # the first tenth is still the EMA's warm-up; the search ends at the minimum
    candidates = range(max(1, len(smoothed) // 10), best)
    steepest = min(candidates, key=slope) if len(candidates) else best
    return dict(suggested_mult=mults[steepest], min_mult=mults[best], min_over_10=mults[best] / 10,
                suggested_index=steepest, min_index=best)


def lr_range_test(recipe, num_steps: int = 100, start_mult: float = 1e-2, end_mult: float = 1e2,
                  stop_factor: float = STOP_FACTOR) -> dict:
    """Run the sweep on the recipe's model and data (a fresh model; nothing saved); return the curve."""
    from .training import prepare_stage

    recipe = replace(recipe, num_iterations=num_steps, dry_run=True, eval_every=-1, save_every=-1,
                     resume_from=None, tracker="none")
    stage = prepare_stage(recipe)
    acc, model, opt = stage.accelerator, stage.model, stage.optimizer
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    data = iter(stage.train_loader)
    mults, losses, smoothed = [], [], []
    best = math.inf
    stopped = "end of sweep"
    model.train()
    for step, mult in enumerate(multipliers(num_steps, start_mult, end_mult)):
        at = stage.schedule.at(step)  # the recipe's momentum and weight decay at this step; lr is the sweep's
        total = 0.0
        for _ in range(stage.plan.grad_accum_steps):
            batch = next(data)
            inputs = {k: v.to(acc.device) for k, v in batch.items() if k in ("input_ids", "shift_labels",
                                                                            "attention_mask")}
            with acc.autocast():
                loss = model(**inputs, use_cache=False).loss / stage.plan.grad_accum_steps
            acc.backward(loss)
            total += loss.item()
        clip_gradients(named, recipe.grad_clip, recipe.grad_clip_mode, unscale=acc.unscale_gradients)
        apply_schedule(opt, mult, at["momentum"], at["weight_decay"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        mults.append(mult)
        losses.append(total)
        if not math.isfinite(total):
            stopped = f"non-finite loss at multiplier {mult:.3g}"
            break
        smoothed = smooth(losses)
        best = min(best, smoothed[-1])
        if step > 0 and smoothed[-1] > stop_factor * best:
            stopped = f"smoothed loss {smoothed[-1]:.3f} > {stop_factor:g} x best {best:.3f}"
            break
    finite = [i for i, x in enumerate(losses) if math.isfinite(x)]
    mults_ok = [mults[i] for i in finite]
    smoothed = smooth([losses[i] for i in finite])
    result = dict(multipliers=mults, losses=losses, smoothed=smoothed + [math.nan] * (len(mults) - len(smoothed)),
                  stopped=stopped, num_steps=num_steps, start_mult=start_mult, end_mult=end_mult,
                  **suggest(mults_ok, smoothed))
    result["recipe_lrs"] = {k: getattr(recipe, k) * result["suggested_mult"]
                            for k in ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr")}
    return result


def plot_lr_find(result: dict, path: str | Path) -> Path:
    """loss (raw and smoothed) against the lr multiplier on a log axis, the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mults, path = result["multipliers"], Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(mults, result["losses"], color="0.75", lw=1, label="loss")
    ax.plot(mults, result["smoothed"], color="C0", lw=2, label="smoothed (EMA 0.98, bias-corrected)")
    for key, color, label in (("suggested_mult", "C3", "suggested (steepest descent)"),
                              ("min_over_10", "C2", "minimum / 10")):
        ax.axvline(result[key], color=color, ls="--", lw=1.2, label=f"{label}: x{result[key]:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("lr multiplier (x every group's recipe lr)")
    ax.set_ylabel("training loss")
    smoothed = [x for x in result["smoothed"] if math.isfinite(x)]
    raw = [x for x in result["losses"] if math.isfinite(x)]
    if smoothed:  # the raw loss's minimum to the stop criterion; diverged steps may run off the top
        ax.set_ylim(min(raw) * 0.97, min(max(raw), STOP_FACTOR * min(smoothed)) * 1.03)
    ax.set_title(f"LR range test ({len(mults)} steps; {result['stopped']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
