"""scripts/base_eval.py and scripts/chat_eval.py end to end on a tiny saved model, then the report card."""

import json
import math
import os
import runpy
import subprocess
import sys

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM


def _save_tiny_stages(root, tokenizer, stages):
    """A random tiny NanoGPT + the tokenizer saved as each stage folder under `root`."""
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=256,
                                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    for stage in stages:
        model.save_pretrained(root / stage)
        tokenizer.save_pretrained(root / stage)


def _run(repo_root, env, *args):
    out = subprocess.run([sys.executable, *args], cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("script", ["base_eval.py", "chat_eval.py"])
def test_help(repo_root, script, capsys):
    # in-process (the scripts' main): a subprocess would spend ~10 s importing torch + transformers for it
    main = runpy.run_path(str(repo_root / "scripts" / script), run_name=script)["main"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "usage:" in out and "--model" in out


@pytest.mark.slow
def test_eval_scripts_fill_the_report_card(tmp_path, repo_root, tiny_tokenizer, shared_data):
    _save_tiny_stages(tmp_path, tiny_tokenizer, ("base", "sft"))
    env = dict(os.environ, HF_NANOGPT_BASE_DIR=str(tmp_path), PYTHONPATH=str(repo_root), HF_HUB_OFFLINE="1")

    out = _run(repo_root, env, "scripts/base_eval.py", "--model", "base", "--tasks", "copa,lambada_openai",
               "--max_per_task", "4", "--bpb_steps", "1", "--bpb_batch_size", "2")
    assert "| copa |" in out and "**CORE** (2 tasks)" in out and "hellaswag (not in the bundle" in out
    base = json.loads((tmp_path / "base" / "base_eval.json").read_text())
    assert base["core"]["num_examples"] == {"copa": 4, "lambada_openai": 4}
    assert 0 < base["val_bpb"] < 20 and len(base["samples"]) >= 5

    _run(repo_root, env, "scripts/chat_eval.py", "-i", "sft", "-a", "ARC-Easy,GSM8K", "--max_problems", "2",
         "--max_new_tokens", "4")
    _run(repo_root, env, "scripts/chat_eval.py", "-i", "sft", "-a", "MMLU", "--max_problems", "2")
    chat = json.loads((tmp_path / "sft" / "chat_eval.json").read_text())
    assert list(chat["tasks"]) == ["MMLU"]  # the JSON holds the last run; the report section merges runs

    _run(repo_root, env, "-m", "hf_nanogpt.report")
    md = (tmp_path / "report.md").read_text()
    core = base["core"]["core"]
    assert f"| CORE | {core:.4f}* | - | - |" in md and "BASE CORE is over the tasks evaluated; missing: hellaswag_zeroshot" in md
    sections = {json.loads(p.read_text())["section"]: json.loads(p.read_text())["data"] for p in (tmp_path / "report").glob("*.json")}
    sft = sections["chat-eval-sft"]
    assert set(sft) >= {"ARC-Easy", "GSM8K", "MMLU", "ChatCORE"}
    expected = ((sft["ARC-Easy"] - 0.25) / 0.75 + sft["GSM8K"] + (sft["MMLU"] - 0.25) / 0.75) / 3
    assert sft["ChatCORE"] == pytest.approx(expected)
    assert f"| ChatCORE | - | - | {sft['ChatCORE']:.4f}* |" in md
    assert sections["base-eval"]["tasks_missing"][:1] == ["hellaswag_zeroshot"]


def test_eval_scripts_without_shared_data_skip_what_cannot_run_offline(tmp_path, repo_root, tiny_tokenizer):
    _save_tiny_stages(tmp_path, tiny_tokenizer, ("sft",))
    env = dict(os.environ, HF_NANOGPT_BASE_DIR=str(tmp_path), PYTHONPATH=str(repo_root), HF_HUB_OFFLINE="1",
               HF_NANOGPT_SHARED_DATA=str(tmp_path / "no_shared_data"))
    out = _run(repo_root, env, "scripts/base_eval.py", "--model", "sft", "--bpb_steps", "1", "--bpb_batch_size", "1",
               "--no_samples")
    assert "CORE skipped: no CORE eval bundle" in out
    base = json.loads((tmp_path / "sft" / "base_eval.json").read_text())
    assert "core" not in base and "no_shared_data/eval_bundle/core.yaml does not exist" in base["core_skipped"]
    assert 0 < base["val_bpb"] < 20
    # perplexity from the same pass: exp(nats per token), the nats being bpb x ln 2 x bytes of those targets
    nats = base["val_bpb"] * math.log(2) * base["val_bytes"]
    assert base["val_ppl"] == pytest.approx(math.exp(nats / base["val_tokens"])) and "perplexity" in out
    out = _run(repo_root, env, "scripts/chat_eval.py", "-i", "sft", "-a", "GSM8K,Arithmetic", "--max_problems", "2",
               "--max_new_tokens", "4", "--spelling_size", "2")
    assert "skipped GSM8K: no local data file" in out
    chat = json.loads((tmp_path / "sft" / "chat_eval.json").read_text())
    assert list(chat["tasks"]) == ["Arithmetic"] and "GSM8K" in chat["skipped"]
