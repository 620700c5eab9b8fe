"""The data and loss parts of the training loop: the sequence-length warmup really starts with short rows,
keeps tokens per step, follows the row length in FLOPs and resumes exactly; loss terms are applied,
logged apart and sum to the loss; a term added to LOSS_TERMS is picked up from the recipe."""

import json
from pathlib import Path

import pytest
import torch

from hf_nanogpt import loss_nanogpt
from hf_nanogpt.data.pretrain import curriculum_seq_len
from hf_nanogpt.recipe import TrainRecipe, parse_recipe
from hf_nanogpt.training import prepare_stage, run, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from hf_nanogpt.data.corpus import stdlib_files

    path = tmp_path_factory.mktemp("corpus") / "code.txt"
    path.write_text("\n\n".join(f.read_text(encoding="utf-8", errors="replace")[:4000]
                                for f in stdlib_files("train")[:40]))
    return path


def recipe(tmp_path, corpus, tokenizer_dir, **overrides) -> TrainRecipe:
    fields = dict(stage="base", output_dir=str(tmp_path / "base"), tokenizer=str(tokenizer_dir),
                  train_data=str(corpus), depth=2, aspect_ratio=32, head_dim=32, max_seq_len=64,
                  device_batch_size=2, total_batch_size=256, num_iterations=6, eval_every=-1, eval_tokens=256,
                  dtype="float32", seed=3, muon_momentum_warmup_steps=3)
    fields.update(overrides)
    return TrainRecipe(**fields)


def log_rows(folder: Path) -> list[dict]:
    return [r for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


def test_curriculum_row_lengths():
    # linear 16 -> 256 over 8 steps, multiples of 64 from 64 on (of 8 below), dividing 8 x 256 tokens
    lengths = [curriculum_seq_len(s, 16, 256, 8, 8 * 256) for s in range(10)]
    assert lengths == [16, 32, 64, 64, 128, 128, 128, 128, 256, 256]
    assert curriculum_seq_len(0, 100, 256, 8, 8 * 256) == 64  # rounded down to a whole number of rows
    assert curriculum_seq_len(5, 64, 192, 0, 4 * 192) == 192  # no warmup
    with pytest.raises(ValueError, match="seq_len_warmup_steps=4 is for pretraining"):
        parse_recipe(["recipes/tiny-sft.yaml", "--seq_len_warmup_steps=4"])
    with pytest.raises(ValueError, match="seq_len_start=4 is invalid"):
        parse_recipe(["recipes/tiny.yaml", "--seq_len_warmup_steps=4", "--seq_len_start=4"])


def test_sequence_length_warmup_uses_short_rows_first_and_resumes_exactly(tmp_path, corpus, tiny_tokenizer_dir):
    kw = dict(seq_len_warmup_steps=4, seq_len_start=16, z_loss_coef=1e-3)
    stage = prepare_stage(recipe(tmp_path / "straight", corpus, tiny_tokenizer_dir, **kw))
    shapes = []
    stage.accelerator.unwrap_model(stage.model).register_forward_pre_hook(
        lambda m, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    train(stage)
    # 2 micro-steps per step of 2 x 64 tokens: rows of 16 (8 of them), 32, 32, 48->32, then 64
    assert shapes[:2] == [(8, 16), (8, 16)] and shapes[-1] == (2, 64)
    assert all(a * b == 128 for a, b in shapes)  # the same tokens in every micro-batch
    rows = log_rows(tmp_path / "straight" / "base")
    assert [r["seq_len"] for r in rows] == [16, 16, 32, 32, 64, 64]
    # FLOPs follow the row length: the attention term is smaller at short rows
    model = stage.accelerator.unwrap_model(stage.model)
    assert stage.plan.total_flops == sum(256 * model.flops_per_token(r["seq_len"]) for r in rows)
    assert stage.plan.total_flops < 6 * 256 * model.flops_per_token(64)
    # interrupted inside the warmup and resumed: the same losses, bitwise
    cut = recipe(tmp_path / "cut", corpus, tiny_tokenizer_dir, max_steps_per_run=3, **kw)
    run(cut)
    run(recipe(tmp_path / "cut", corpus, tiny_tokenizer_dir, resume_from="latest", **kw))
    assert [r["loss"] for r in log_rows(tmp_path / "cut" / "base")] == [r["loss"] for r in rows]


def test_loss_terms_are_applied_and_logged_apart(tmp_path, corpus, tiny_tokenizer_dir, monkeypatch):
    # a term added in one place (LOSS_TERMS) and switched on from the recipe
    monkeypatch.setitem(loss_nanogpt.LOSS_TERMS, "mean_logit", lambda s, lse, y: s.mean(dim=-1))
    plain = run(recipe(tmp_path / "plain", corpus, tiny_tokenizer_dir, num_iterations=3))
    terms = run(recipe(tmp_path / "terms", corpus, tiny_tokenizer_dir, num_iterations=3, z_loss_coef=1e-2,
                       label_smoothing=0.1, loss_terms={"mean_logit": 0.5}))
    rows = log_rows(tmp_path / "terms" / "base")
    for r in rows:
        parts = [r["loss_ce"], r["loss_z_loss"], r["loss_label_smoothing"], r["loss_mean_logit"]]
        assert r["loss"] == pytest.approx(sum(parts), rel=1e-6)
        assert all(abs(p) > 1e-6 for p in parts[1:])  # every term contributes
    assert "loss_ce" not in log_rows(tmp_path / "plain" / "base")[0]  # no terms: no parts logged
    assert plain["loss"] != terms["loss"]
    with pytest.raises(ValueError, match="loss_terms names an unknown term 'entropy'"):
        recipe(tmp_path, corpus, tiny_tokenizer_dir, loss_terms={"entropy": 0.1}).validate()
    with pytest.raises(ValueError, match="loss_terms names 'z_loss': set it with its own key"):
        recipe(tmp_path, corpus, tiny_tokenizer_dir, loss_terms={"z_loss": 0.1}).validate()


@pytest.mark.parametrize("packing", ["crop", "stream"])
def test_packing_mode_reaches_the_loader_and_the_report(tmp_path, corpus, tiny_tokenizer_dir, packing):
    summary = run(recipe(tmp_path, corpus, tiny_tokenizer_dir, num_iterations=2, packing=packing))
    assert summary["data"]["packing"] == packing
    report = json.loads((tmp_path / "report" / "base-train.json").read_text())["data"]
    assert report["packing"] == packing and (report["cropped_fraction"] > 0) == (packing == "crop")
    assert torch.isfinite(torch.tensor(summary["loss"]))
