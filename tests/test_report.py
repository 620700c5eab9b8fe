"""The report card: sections, the BASE/MID/SFT table, wall time, plots from train_log.jsonl, the CLI."""

import json
import subprocess
import sys

import pytest

from hf_nanogpt import report


def _write_log(path, n, bad_line_at=None, torn_tail=False, lr_key="lr"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for s in range(n):
            if s == bad_line_at:
                f.write("not json\n")
            f.write(json.dumps({"step": s, "loss": 5.0 - 0.1 * s, lr_key: 0.01, "grad_norm": 1.0,
                                "tokens_per_s": 1000.0 + s, "mfu": 0.5}) + "\n")
            if s % 5 == 0:
                f.write(json.dumps({"step": s, "val_bpb": 2.0 - 0.01 * s}) + "\n")
        if torn_tail:
            f.write('{"step": 99, "lo')


def test_append_merges_keys_and_validates(tmp_path):
    report.append(tmp_path, "base-eval", {"CORE": 0.1, "bpb": 1.5})
    report.append(tmp_path, "base-eval", {"CORE": 0.2})
    (name, data), = report.read_sections(tmp_path)
    assert name == "base-eval" and data == {"CORE": 0.2, "bpb": 1.5}
    assert not list((tmp_path / "report").glob("*.tmp*"))
    with pytest.raises(ValueError, match="section 'base eval'"):
        report.append(tmp_path, "base eval", {})
    with pytest.raises(TypeError, match="must be a dict"):
        report.append(tmp_path, "base-eval", [1, 2])
    report.append(tmp_path, "odd", {"nan": float("nan"), "path": tmp_path})
    assert dict(report.read_sections(tmp_path))["odd"] == {"nan": None, "path": str(tmp_path)}


def test_timed_records_wall_time_even_on_failure(tmp_path):
    with report.timed(tmp_path, "base-train") as data:
        data["steps"] = 3
    with pytest.raises(RuntimeError):
        with report.timed(tmp_path, "mid-train"):
            raise RuntimeError("boom")
    sections = dict(report.read_sections(tmp_path))
    assert sections["base-train"]["steps"] == 3 and sections["base-train"]["wall_time_s"] >= 0
    assert sections["mid-train"]["failed"] is True


def test_report_card_tables_plots_and_order(tmp_path):
    report.reset(tmp_path)
    _write_log(tmp_path / "base" / "train_log.jsonl", 12, torn_tail=True)
    _write_log(tmp_path / "sft" / "train_log.jsonl", 4, lr_key="lr_mult")  # the training loop's name
    report.append(tmp_path, "chat-eval-sft", {"ARC-Easy": 0.31, "GSM8K": 0.02, "ChatCORE": 0.05, "wall_time_s": 30})
    report.append(tmp_path, "base-train", {"train_time_s": 3725.0, "final_val_bpb": 1.9})
    report.append(tmp_path, "base-eval", {"CORE": 0.1234, "wall_time_s": 60})
    report.append(tmp_path, "chat-eval-mid", {"ARC-Easy": 0.29, "MMLU": 0.27, "ChatCORE": 0.03,
                                              "ChatCORE_tasks_missing": ["GSM8K", "HumanEval"]})
    md = report.write_report(tmp_path).read_text()

    table = md.split("## Summary")[1].split("##")[0]
    assert "| Metric | BASE | MID | SFT |" in table
    assert "| CORE | 0.1234 | - | - |" in table
    assert "| ARC-Easy | - | 0.2900 | 0.3100 |" in table
    assert "| MMLU | - | 0.2700 | - |" in table
    assert "| ChatCORE | - | 0.0300* | 0.0500 |" in table  # partial ChatCORE is starred, with a note
    assert "MID ChatCORE is over the tasks evaluated; missing: GSM8K, HumanEval." in table
    assert "| HumanEval |" not in table  # never measured: no row
    assert "| base-train | 1h02m05s |" in md and "| **sum of stages** | **1h03m35s** |" in md
    env = md.split("## Environment")[1].split("##")[0]
    assert "- torch: " in env and "- git_commit: " in env and "- cpu_count: " in env
    # sections in pipeline order, whatever the order they were written in
    assert md.index("## base-train") < md.index("## base-eval") < md.index("## chat-eval-mid") < md.index("## chat-eval-sft")
    for key in ("loss", "lr", "tokens_per_s", "val_bpb"):
        png = tmp_path / "report" / f"{key}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{key}](report/{key}.png)" in md


def test_train_log_errors_name_file_and_line(tmp_path):
    log = tmp_path / "base" / "train_log.jsonl"
    _write_log(log, 3, bad_line_at=1)
    with pytest.raises(ValueError, match=r"train_log.jsonl:3: not valid JSON"):
        report.read_train_log(log)
    log.write_text('{"loss": 1.0}\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"train_log.jsonl:1: expected a JSON object with a 'step' key"):
        report.read_train_log(log)


def test_cli_writes_report_and_fails_clearly_on_empty_run(tmp_path, repo_root):
    report.append(tmp_path, "base-eval", {"CORE": 0.05})
    out = subprocess.run([sys.executable, "-m", "hf_nanogpt.report", "--run_dir", str(tmp_path)],
                         cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| CORE | 0.0500 | - | - |" in (tmp_path / "report.md").read_text()
    with pytest.raises(FileNotFoundError, match="nothing to report"):
        report.write_report(tmp_path / "empty")


def test_learned_summary_compares_the_final_chat_model_with_chance():
    from hf_nanogpt.report import learned_summary

    sections = [("chat-eval-mid", {"SpellingBee": 0.1}),
                ("chat-eval-sft", {"SpellingBee": 0.9, "ARC-Easy": 0.3, "max_problems": 48})]
    text = "\n".join(learned_summary(sections))
    assert "up to 48 problems per task" in text
    assert "- SpellingBee: 90.0% (chance 0%) -- learned" in text
    assert "- ARC-Easy: 30.0% (chance 25%)\n" in text + "\n"  # within noise of chance: not marked
    assert learned_summary([("base-train", {"steps": 3})]) == []


def test_validation_table_puts_perplexity_next_to_bits_per_byte(tmp_path):
    from hf_nanogpt.report import validation_table

    log = tmp_path / "base" / "train_log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(json.dumps(r) for r in [{"step": 0, "val_bpb": 3.0, "val_ppl": 900.0},
                                                      {"step": 5, "loss": 2.0},
                                                      {"step": 10, "val_bpb": 1.5, "val_ppl": 30.25}]) + "\n")
    (tmp_path / "mid").mkdir()
    (tmp_path / "mid" / "train_log.jsonl").write_text(json.dumps({"step": 4, "val_bpb": 0.9}) + "\n")  # older log
    lines = validation_table(tmp_path, [("base-eval", {"val_bpb": 1.25, "val_ppl": 17.5})])
    text = "\n".join(lines)
    assert "| base-train (step 10) | 1.5000 | 30.25 |" in text
    assert "| mid-train (step 4) | 0.9000 | - |" in text
    assert "| base-eval | 1.2500 | 17.50 |" in text and "same tokenizer" in text
    assert validation_table(tmp_path / "nothing", []) == []
    report.append(tmp_path, "base-eval", {"val_bpb": 1.25, "val_ppl": 17.5})
    md = report.write_report(tmp_path).read_text()
    assert "## Validation loss" in md and "![val_ppl](report/val_ppl.png)" in md
