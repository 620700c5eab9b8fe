"""The LR range test on the tiny recipe: the loss falls, then diverges; the suggestion lies inside the sweep;
only lr_find.json and lr_find.png are written."""

import json
import math
import runpy
from pathlib import Path

import pytest

from hf_nanogpt.lr_finder import multipliers, smooth, suggest

REPO = Path(__file__).resolve().parents[1]


def test_sweep_smoothing_and_suggestion_rules():
    m = multipliers(5, 0.01, 100.0)
    assert m[0] == pytest.approx(0.01) and m[-1] == pytest.approx(100.0) and m[2] == pytest.approx(1.0)
    # bias correction: a constant loss stays constant from the first step (no pull towards 0)
    assert smooth([3.0] * 4) == pytest.approx([3.0] * 4)
    assert smooth([2.0, 4.0], beta=0.5) == pytest.approx([2.0, (0.5 * 0.5 * 2 + 0.5 * 4) / 0.75])
    mults = multipliers(40, 0.01, 100.0)
    curve = [5 - 3 / (1 + math.exp(-(i - 15) / 2)) + (0.2 * (i - 25) ** 2 if i > 25 else 0) for i in range(40)]
    out = suggest(mults, curve)
    assert out["min_index"] in (24, 25, 26) and 12 <= out["suggested_index"] <= 18  # steepest fall near i = 15
    with pytest.raises(ValueError, match="start_mult < end_mult"):
        multipliers(10, 1.0, 0.1)


def test_lr_find_on_the_tiny_recipe_falls_then_diverges(tmp_path, tiny_tokenizer_dir, monkeypatch):
    from hf_nanogpt.data.corpus import stdlib_files

    corpus = tmp_path / "code.txt"
    corpus.write_text("\n\n".join(f.read_text(encoding="utf-8", errors="replace")[:6000]
                                  for f in stdlib_files("train")[:40]))
    monkeypatch.setenv("HF_NANOGPT_BASE_DIR", str(tmp_path / "run"))
    out = tmp_path / "lr_find"
    main = runpy.run_path(str(REPO / "scripts" / "lr_find.py"))["main"]
    # the tiny recipe (its optimizer, lrs and schedule keys) on a 2-layer, 64-token version of its model, a
    # small local corpus and batch: ~20x cheaper than the full tiny model (the README's curve is the full one)
    result = main([str(REPO / "recipes" / "tiny.yaml"), "--num_steps", "48", "--start_mult", "0.01",
                   "--end_mult", "300", "--output_dir", str(out), f"--tokenizer={tiny_tokenizer_dir}",
                   f"--train_data={corpus}", "--depth=2", "--max_seq_len=64", "--device_batch_size=4",
                   "--total_batch_size=256"])
    smoothed = [x for x in result["smoothed"] if math.isfinite(x)]
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    assert 0 < best < len(smoothed) - 1  # an interior minimum
    assert smoothed[0] - smoothed[best] > 0.3  # it falls ...
    raw = result["losses"]
    diverged = not math.isfinite(raw[-1]) or raw[-1] > min(raw) + 1.0 or result["stopped"] != "end of sweep"
    assert diverged and smoothed[-1] > smoothed[best] + 0.3  # ... then diverges
    assert 0.01 <= result["suggested_mult"] <= result["min_mult"] <= 300
    assert result["recipe_lrs"]["matrix_lr"] == pytest.approx(0.02 * result["suggested_mult"])
    saved = json.loads((out / "lr_find.json").read_text())
    assert saved["suggested_mult"] == result["suggested_mult"]
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.json", "lr_find.png"]
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("*.pt"))  # no weights left behind


def test_lr_find_help_names_a_launch_example(capsys):
    main = runpy.run_path(str(REPO / "scripts" / "lr_find.py"))["main"]
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "python scripts/lr_find.py recipes/tiny.yaml" in out and "--num_steps" in out
