"""scripts/chat_cli.py in a real subprocess on a tiny saved model + tokenizer folder: one-shot (-p)
and interactive (history, clear, quit). Greedy decoding makes the expected replies computable here."""

import os
import re
import runpy
import subprocess
import sys

import pytest
import torch

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.engine import Engine
from hf_nanogpt.tokenization import render_for_completion

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, tiny_tokenizer):
    """A run folder whose `sft/` stage holds a random tiny model with its tokenizer."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = NanoGPTConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=256)
    model = NanoGPTForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(root / "sft")
    tiny_tokenizer.save_pretrained(root / "sft")
    return root, model


def greedy(model, tokenizer, messages) -> str:
    engine = Engine.from_tokenizer(model, tokenizer)
    ids = engine.generate_batch(render_for_completion(tokenizer, messages), temperature=0.0, max_tokens=MAX_TOKENS)
    return tokenizer.decode(ids[0][0], skip_special_tokens=False)


def run_cli(repo_root, root, args, stdin=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo_root), "HF_NANOGPT_BASE_DIR": str(root)}
    return subprocess.run([sys.executable, str(repo_root / "scripts" / "chat_cli.py"), "-i", "sft", "-t", "0",
                           "--max_tokens", str(MAX_TOKENS), *args],
                          input=stdin, capture_output=True, text=True, env=env, timeout=300)


def test_one_shot_prompt(repo_root, run_folder, tiny_tokenizer):
    root, model = run_folder
    done = run_cli(repo_root, root, ["-p", "What is the capital of France?"])
    assert done.returncode == 0, done.stderr
    expected = greedy(model, tiny_tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    assert expected and done.stdout == expected + "\n"


def test_interactive_keeps_history_and_clear_resets_it(repo_root, run_folder, tiny_tokenizer):
    root, model = run_folder
    done = run_cli(repo_root, root, [], stdin="hello\nclear\nhi again\nand then?\nquit\nnever read\n")
    assert done.returncode == 0, done.stderr
    assert "(conversation cleared)" in done.stdout
    replies = re.findall(r"Assistant: (.*?)\n\nUser: ", done.stdout, flags=re.DOTALL)
    assert len(replies) == 3  # quit ended the session before the last line
    first = greedy(model, tiny_tokenizer, [{"role": "user", "content": "hello"}])
    after_clear = greedy(model, tiny_tokenizer, [{"role": "user", "content": "hi again"}])
    with_history = greedy(model, tiny_tokenizer, [{"role": "user", "content": "hi again"},
                                                  {"role": "assistant", "content": after_clear},
                                                  {"role": "user", "content": "and then?"}])
    without_history = greedy(model, tiny_tokenizer, [{"role": "user", "content": "and then?"}])
    assert replies == [first, after_clear, with_history]
    assert with_history != without_history  # so the check above really tells whether history was kept


def test_missing_model_folder_names_it(repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_NANOGPT_BASE_DIR", str(tmp_path))
    cli = runpy.run_path(str(repo_root / "scripts" / "chat_cli.py"), run_name="chat_cli")
    with pytest.raises(SystemExit) as exit_info:
        cli["main"](["-i", "sft", "-p", "hi"])
    assert str(tmp_path / "sft") in str(exit_info.value) and "does not exist" in str(exit_info.value)


def test_help(repo_root, capsys):
    cli = runpy.run_path(str(repo_root / "scripts" / "chat_cli.py"), run_name="chat_cli")
    with pytest.raises(SystemExit) as exit_info:
        cli["main"](["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "clear" in out and "-p PROMPT" in out
