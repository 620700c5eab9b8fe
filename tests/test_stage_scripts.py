"""The stage scripts as a newcomer types them: a fresh folder with no tokenizer, a byte-level (vocab 265)
tokenizer whose size is not a multiple of 64, and a recipe handed to the wrong stage script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_nanogpt.recipe import parse_recipe

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, cwd: Path, base_dir: Path, timeout: int = 900):
    env = {**os.environ, "HF_NANOGPT_BASE_DIR": str(base_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script,recipe,stage,wanted", [
    ("pretrain", "tiny-sft", "base", "scripts/sft.py"),
    ("pretrain", "tiny-mid", "base", "scripts/midtrain.py"),
    ("sft", "tiny", "sft", "scripts/pretrain.py"),
    ("midtrain", "tiny-sft", "mid", "scripts/sft.py"),
])
def test_a_stage_script_refuses_a_recipe_of_another_stage(script, recipe, stage, wanted):
    path = str(REPO / "recipes" / f"{recipe}.yaml")
    with pytest.raises(ValueError) as err:
        parse_recipe([path], stage=stage)
    message = str(err.value)
    assert path in message and f"scripts/{script}.py trains stage {stage!r}" in message and wanted in message


def test_the_stage_key_on_the_command_line_is_checked_too_and_legacy_pretrain_means_base(tmp_path):
    with pytest.raises(ValueError, match="the command line is a recipe of stage 'sft'"):
        parse_recipe(["--stage=sft"], stage="base")
    legacy = tmp_path / "old.yaml"
    legacy.write_text("stage: pretrain\nnum_iterations: 3\n")  # recipes written before stages.py
    assert parse_recipe([str(legacy)], stage="base").stage == "base"


def test_wrong_stage_script_exits_with_the_message(tmp_path):
    proc = run_script("pretrain.py", str(REPO / "recipes" / "tiny-sft.yaml"), cwd=tmp_path, base_dir=tmp_path,
                      timeout=300)
    assert proc.returncode != 0
    assert "is a recipe of stage 'sft'" in proc.stderr and "scripts/sft.py" in proc.stderr
    assert not (tmp_path / "sft").exists() and not (tmp_path / "base").exists()  # nothing ran


@pytest.mark.slow
def test_tiny_pretrain_in_a_fresh_folder_trains_its_tokenizer_on_the_fly(tmp_path):
    proc = run_script("pretrain.py", str(REPO / "recipes" / "tiny.yaml"), "--num_iterations=2", "--eval_every=-1",
                      "--eval_tokens=4096", "--save_every=-1", cwd=tmp_path, base_dir=tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does not exist: training a 4096-token BPE" in proc.stderr
    tokenizer = tmp_path / "out" / "tokenizer"
    assert (tokenizer / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "out" / "base" / "config.json").read_text())["vocab_size"] == 4096
    # a second run reuses it instead of training again
    proc = run_script("pretrain.py", str(REPO / "recipes" / "tiny.yaml"), "--num_iterations=1", "--eval_every=-1",
                      "--eval_tokens=4096", "--save_every=-1", cwd=tmp_path, base_dir=tmp_path / "out")
    assert proc.returncode == 0 and "training a 4096-token BPE" not in proc.stderr


def test_a_missing_tokenizer_for_other_data_names_the_tok_train_command(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("some text\n" * 100)
    proc = run_script("pretrain.py", str(REPO / "recipes" / "tiny.yaml"), f"--train_data={corpus}[:90%]",
                      f"--val_data={corpus}[90%:]", cwd=tmp_path, base_dir=tmp_path / "out", timeout=300)
    assert proc.returncode != 0
    assert f"tokenizer folder {tmp_path / 'out' / 'tokenizer'} does not exist" in proc.stderr
    assert f"python scripts/tok_train.py --data '{corpus}[:90%]'" in proc.stderr


@pytest.mark.slow
def test_byte_level_265_token_tokenizer_trains_a_model_end_to_end(shared_data, tmp_path):
    """The documented shakespeare-char flow (shrunk): vocab 265 = 256 bytes + 9 control tokens, no merges;
    the model pads its vocabulary to 320, validation (bits per byte) runs, and the final model is saved."""
    text = shared_data / "corpus" / "tinyshakespeare.txt"
    tok = tmp_path / "tokenizer"
    proc = run_script("tok_train.py", "--data", f"{text}[:90%]", "--vocab_size", "265", "--output_dir", str(tok),
                      cwd=tmp_path, base_dir=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tok / "tok_train.json").read_text())["vocab_size"] == 265
    out = tmp_path / "base"
    proc = run_script("pretrain.py", str(REPO / "recipes" / "shakespeare-char.yaml"), f"--tokenizer={tok}",
                      f"--output_dir={out}", f"--train_data={text}[:90%]", f"--val_data={text}[90%:]", "--depth=2",
                      "--max_seq_len=64", "--device_batch_size=4", "--total_batch_size=256", "--num_iterations=4",
                      "--eval_every=2", "--eval_tokens=1024", "--save_every=-1", "--dtype=float32",
                      cwd=tmp_path, base_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 320  # 265 padded to a multiple of 64
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    bpbs = [r["val_bpb"] for r in rows if "val_bpb" in r]
    assert len(bpbs) == 3 and all(0 < b < 20 for b in bpbs)  # steps 0, 2 and 4
    assert (out / "model.safetensors").is_file()
