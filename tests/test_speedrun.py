"""A shortened speedrun end to end: every stage through the real scripts, one run folder at the end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_speedrun_produces_loadable_stages_and_a_report(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable, "HF_NANOGPT_BASE_DIR": str(tmp_path / "elsewhere")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "speedrun.sh"), "tiny", "--quick", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Report: {out}/report.md" in proc.stdout and "chat_cli.py -i sft" in proc.stdout
    for stage in ("base", "mid", "sft"):
        assert (out / stage / "model.safetensors").is_file() and (out / stage / "tokenizer.json").is_file()
    report = (out / "report.md").read_text()
    for section in ("CORE", "ChatCORE", "SpellingBee", "Wall time", "base-train", "mid-train", "sft-train"):
        assert section in report, section
    assert (out / "report" / "loss.png").is_file()
    # the final chat model loads through the Auto classes from the run folder and answers
    script = (
        "import sys; sys.modules['hf_nanogpt'] = None\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"p = {str(out / 'sft')!r}\n"
        "tok = AutoTokenizer.from_pretrained(p, trust_remote_code=True)\n"
        "m = AutoModelForCausalLM.from_pretrained(p, trust_remote_code=True)\n"
        "x = tok.apply_chat_template([{'role': 'user', 'content': 'How many r in \"carrot\"?'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "y = m.generate(**x, max_new_tokens=8, do_sample=False)\n"
        "print('GENERATED', y.shape[1] > x['input_ids'].shape[1])\n")
    check = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": ""}, timeout=300)
    assert "GENERATED True" in check.stdout, check.stderr[-2000:]
    sections = {p.stem: json.loads(p.read_text())["data"] for p in (out / "report").glob("*.json")}
    assert {"base-train", "base-eval", "mid-train", "chat-eval-mid", "sft-train", "chat-eval-sft"} <= set(sections)
    # the report card says how pretraining packed its rows and what it threw away (nothing, by default)
    assert sections["base-train"]["packing"] == "continue" and sections["base-train"]["cropped_fraction"] == 0
    assert "- cropped_fraction: 0" in report
    # the README's example: tight and spaced, the question reaches the calculator and the answer is 408
    for question in ("What is 12*34?", "What is 12 * 34?"):
        cli = subprocess.run([sys.executable, str(REPO / "scripts" / "chat_cli.py"), "-i", str(out / "sft"),
                              "-p", question, "-t", "0", "--max_tokens", "40"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert "<|python_start|>" in cli.stdout and "<|output_start|>408<|output_end|>" in cli.stdout, cli.stdout
        assert cli.stdout.strip().endswith("#### 408"), cli.stdout
