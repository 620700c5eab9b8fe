"""Schedules over the optimizer steps: the lr multiplier, Muon's momentum and Muon's weight decay.

nanochat master's defaults (`scripts/base_train.py`), all recipe keys:

- lr multiplier (`lr_schedule`): linear warmup over `warmup_steps`, then
  - `wsd` (nanochat): constant, then a linear warmdown over the last `warmdown_ratio` of the steps to
    `final_lr_frac`;
  - `cosine`: cosine decay from 1 to `final_lr_frac` over the steps after the warmup;
  - `step`: 1.0, then `step_factors[i]` from `step_milestones[i]` (fractions of the steps) on; the nanochat
    guide's example is `step_milestones: [0.5, 0.8]`, `step_factors: [0.5, 0.1]` (1.0 -> 0.5 at 50% -> 0.1 at 80%);
  - `constant`: 1.
- Muon momentum: `muon_momentum_start` (0.85) -> `muon_momentum_end` (0.97) linearly over
  `muon_momentum_warmup_steps` (400), then from the start of the last `warmdown_ratio` of the steps
  linearly to `muon_momentum_warmdown` (0.90) at the end (set it equal to the end value to keep it flat).
- Muon weight decay (`weight_decay_schedule`): `cosine` = wd x 0.5 (1 + cos(pi step / steps)), from wd to 0
  (nanochat), or `constant`. `wd` is the plan's (scaled) weight decay.

`Schedule.from_recipe(recipe, num_iterations, weight_decay)` bundles them; `Schedule.at(step)` is what the
training loop applies before every optimizer step, and `scripts/plot_schedule.py` draws.
"""

import math
from dataclasses import dataclass, field

LR_SCHEDULES = ("wsd", "cosine", "step", "constant")
WEIGHT_DECAY_SCHEDULES = ("cosine", "constant")


def lr_multiplier(step: int, num_iterations: int, schedule: str = "wsd", warmup_steps: int = 0,
                  warmdown_ratio: float = 0.65, final_lr_frac: float = 0.05,
                  step_milestones: tuple[float, ...] | list[float] = (),
                  step_factors: tuple[float, ...] | list[float] = ()) -> float:
    """Learning-rate multiplier at `step` (0-based) of `num_iterations` (see the module docstring)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, num_iterations - warmup_steps)
        return final_lr_frac + (1 - final_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "step":
        mult = 1.0
        for milestone, factor in zip(step_milestones, step_factors):
            if step >= round(milestone * num_iterations):
                mult = factor
        return mult
    if schedule != "wsd":
        raise ValueError(f"lr_schedule={schedule!r} is invalid: expected one of {', '.join(LR_SCHEDULES)}")
    warmdown = round(warmdown_ratio * num_iterations)
    if step <= num_iterations - warmdown:
        return 1.0
    progress = (num_iterations - step) / warmdown  # 1 -> 0 over the warmdown
    return progress + (1 - progress) * final_lr_frac


def muon_momentum(step: int, num_iterations: int | None = None, start: float = 0.85, end: float = 0.97,
                  warmup_steps: int = 400, warmdown: float | None = None, warmdown_ratio: float = 0.0) -> float:
    """Muon momentum at `step`: linear warmup `start` -> `end` over `warmup_steps`, flat, then linear
    `end` -> `warmdown` across the last `warmdown_ratio` of `num_iterations` (nanochat master). The warmup
    wins where the two overlap (short runs), as in nanochat."""
    if step < warmup_steps:
        frac = step / warmup_steps
        return (1 - frac) * start + frac * end
    if warmdown is None or num_iterations is None:
        return end
    warmdown_steps = round(warmdown_ratio * num_iterations)
    warmdown_start = num_iterations - warmdown_steps
    if warmdown_steps > 0 and step >= warmdown_start:
        progress = (step - warmdown_start) / warmdown_steps
        return end * (1 - progress) + warmdown * progress
    return end


def muon_weight_decay(step: int, num_iterations: int, weight_decay: float, schedule: str = "cosine") -> float:
    """Muon weight decay at `step`: `cosine` from `weight_decay` to 0 over the run (nanochat), or `constant`."""
    if schedule == "constant":
        return weight_decay
    if schedule != "cosine":
        raise ValueError(f"weight_decay_schedule={schedule!r} is invalid: expected one of "
                         f"{', '.join(WEIGHT_DECAY_SCHEDULES)}")
    return weight_decay * 0.5 * (1 + math.cos(math.pi * step / num_iterations))


@dataclass(frozen=True)
class Schedule:
    """The three schedules of one run, resolved from the recipe and the plan."""

    num_iterations: int
    lr_schedule: str = "wsd"
    warmup_steps: int = 0
    warmdown_ratio: float = 0.65
    final_lr_frac: float = 0.05
    step_milestones: tuple = field(default_factory=tuple)
    step_factors: tuple = field(default_factory=tuple)
    momentum_start: float = 0.85
    momentum_end: float = 0.97
    momentum_warmup_steps: int = 400
    momentum_warmdown: float = 0.90
    weight_decay: float = 0.0
    weight_decay_schedule: str = "cosine"

    @classmethod
    def from_recipe(cls, recipe, num_iterations: int, weight_decay: float | None = None) -> "Schedule":
        """The schedule of a `TrainRecipe` over `num_iterations` steps; `weight_decay` is the plan's scaled
        Muon weight decay (default: the recipe's)."""
        return cls(num_iterations=num_iterations, lr_schedule=recipe.lr_schedule, warmup_steps=recipe.warmup_steps,
                   warmdown_ratio=recipe.warmdown_ratio, final_lr_frac=recipe.final_lr_frac,
                   step_milestones=tuple(recipe.step_milestones), step_factors=tuple(recipe.step_factors),
                   momentum_start=recipe.muon_momentum_start, momentum_end=recipe.muon_momentum_end,
                   momentum_warmup_steps=recipe.muon_momentum_warmup_steps,
                   momentum_warmdown=recipe.muon_momentum_warmdown,
                   weight_decay=recipe.weight_decay if weight_decay is None else weight_decay,
                   weight_decay_schedule=recipe.weight_decay_schedule)

    def lr_mult(self, step: int) -> float:
        return lr_multiplier(step, self.num_iterations, self.lr_schedule, self.warmup_steps, self.warmdown_ratio,
                             self.final_lr_frac, self.step_milestones, self.step_factors)

    def momentum(self, step: int) -> float:
        return muon_momentum(step, self.num_iterations, self.momentum_start, self.momentum_end,
                             self.momentum_warmup_steps, self.momentum_warmdown, self.warmdown_ratio)

    def muon_weight_decay(self, step: int) -> float:
        return muon_weight_decay(step, self.num_iterations, self.weight_decay, self.weight_decay_schedule)

    def at(self, step: int) -> dict[str, float]:
        """{lr_mult, momentum, weight_decay} to apply before optimizer step `step` (0-based)."""
        return dict(lr_mult=self.lr_mult(step), momentum=self.momentum(step),
                    weight_decay=self.muon_weight_decay(step))
