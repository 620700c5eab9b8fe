"""Schedules: the lr multiplier (wsd, cosine, step, constant), Muon momentum and weight decay, as nanochat master."""

import math

import pytest

from hf_nanogpt.recipe import TrainRecipe
from hf_nanogpt.schedules import Schedule, lr_multiplier, muon_momentum, muon_weight_decay


@pytest.mark.parametrize("schedule", ["wsd", "cosine", "constant"])
def test_lr_schedules(schedule):
    n = 100
    mult = [lr_multiplier(s, n, schedule, warmup_steps=10, warmdown_ratio=0.3, final_lr_frac=0.1) for s in range(n)]
    assert mult[0] == pytest.approx(0.1) and mult[9] == pytest.approx(1.0)  # linear warmup over 10 steps
    assert max(mult) == pytest.approx(1.0)
    if schedule == "constant":
        assert mult[-1] == 1.0
    else:
        assert mult[-1] < 0.2 and all(a >= b - 1e-12 for a, b in zip(mult[10:], mult[11:]))  # non-increasing
    if schedule == "wsd":
        assert mult[70] == 1.0 and mult[71] < 1.0  # flat until the last 30%


def test_nanochat_master_wsd_values():
    # nanochat master d20: 4980 steps, warmup 40, warmdown 0.65 to 0.05
    n = 4980
    warmdown = round(0.65 * n)
    assert lr_multiplier(0, n, "wsd", 40, 0.65, 0.05) == pytest.approx(1 / 40)
    assert lr_multiplier(39, n, "wsd", 40, 0.65, 0.05) == 1.0
    assert lr_multiplier(n - warmdown, n, "wsd", 40, 0.65, 0.05) == 1.0
    assert lr_multiplier(n - 1, n, "wsd", 40, 0.65, 0.05) == pytest.approx(0.05 + 0.95 / warmdown)


def test_step_schedule_is_the_nanochat_guide_example():
    n = 1000
    mult = [lr_multiplier(s, n, "step", warmup_steps=0, step_milestones=[0.5, 0.8], step_factors=[0.5, 0.1])
            for s in range(n)]
    assert set(mult[:500]) == {1.0} and set(mult[500:800]) == {0.5} and set(mult[800:]) == {0.1}
    # the warmup still comes first
    assert lr_multiplier(3, n, "step", warmup_steps=10, step_milestones=[0.5], step_factors=[0.5]) == 0.4


def test_muon_momentum_warms_up_then_down_across_the_warmdown():
    n, ratio = 5000, 0.65
    start = n - round(ratio * n)
    m = [muon_momentum(s, n, 0.85, 0.97, 400, 0.90, ratio) for s in range(n)]
    assert m[0] == pytest.approx(0.85) and m[200] == pytest.approx(0.91) and m[400] == pytest.approx(0.97)
    assert set(m[400:start]) == {0.97}
    assert m[start + round(ratio * n) // 2] == pytest.approx(0.935) and m[-1] == pytest.approx(0.90, abs=1e-4)
    assert muon_momentum(10_000, None, 0.85, 0.95, 300) == 0.95  # no warmdown: flat after the warmup


def test_muon_weight_decay_cosine_to_zero_or_constant():
    n = 100
    assert muon_weight_decay(0, n, 0.2) == pytest.approx(0.2)
    assert muon_weight_decay(50, n, 0.2) == pytest.approx(0.1)
    assert muon_weight_decay(99, n, 0.2) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert muon_weight_decay(99, n, 0.2, "constant") == 0.2
    with pytest.raises(ValueError, match="weight_decay_schedule='linear'"):
        muon_weight_decay(0, n, 0.2, "linear")


def test_schedule_from_recipe_reads_every_key():
    r = TrainRecipe(lr_schedule="step", step_milestones=[0.5], step_factors=[0.25], warmup_steps=2,
                    muon_momentum_start=0.8, muon_momentum_end=0.9, muon_momentum_warmup_steps=10,
                    muon_momentum_warmdown=0.85, warmdown_ratio=0.5, weight_decay=0.1,
                    weight_decay_schedule="constant")
    s = Schedule.from_recipe(r, 100, weight_decay=0.05)  # the plan's scaled decay wins over the recipe's
    assert s.at(0) == dict(lr_mult=0.5, momentum=0.8, weight_decay=0.05)
    assert s.at(60) == dict(lr_mult=0.25, momentum=pytest.approx(0.9 - 0.05 * 0.2), weight_decay=0.05)


def test_plot_schedule_script_draws_the_plan(tmp_path, capsys):
    import runpy
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    main = runpy.run_path(str(repo / "scripts" / "plot_schedule.py"))["main"]
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "plot_schedule.py recipes/d20.yaml" in capsys.readouterr().out
    # the documented step-decay example on the tiny recipe (its plan: --plan_only, no data read)
    out = main([str(repo / "recipes" / "tiny.yaml"), "--lr_schedule=step", "--step_milestones=[0.5, 0.8]",
                "--step_factors=[0.5, 0.1]", f"--tokenizer={tmp_path / 'none'}", "--output_dir", str(tmp_path)])
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
