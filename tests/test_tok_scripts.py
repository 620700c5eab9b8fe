"""scripts/tok_train.py, scripts/tok_eval.py and `bench.py tokenizer`, run in-process on tiny settings."""

import importlib.util
import json

import pytest
from transformers import AutoTokenizer

from hf_nanogpt.benchmarks import tokenizer as tokenizer_bench


def load_script(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", repo_root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["tok_train", "tok_eval"])
def test_help(repo_root, name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(repo_root, name).main(["--help"])
    assert exit_info.value.code == 0 and "python scripts/" in capsys.readouterr().out


def test_train_then_eval_against_rustbpe(repo_root, tmp_path, capsys):
    out = load_script(repo_root, "tok_train").main(
        ["--output_dir", str(tmp_path / "tok"), "--vocab_size", "512", "--max_chars", "300000", "--data", "stdlib"])
    record = json.loads((out / "tok_train.json").read_text())
    assert record["train_chars"] == 300_000 and record["vocab_size"] == 512
    assert len(AutoTokenizer.from_pretrained(out)) == 512

    table = load_script(repo_root, "tok_eval").main(["--tokenizer", str(out), "--rustbpe", "--prose", str(tmp_path / "none")])
    printed = capsys.readouterr().out
    assert "| code: stdlib val |" in printed
    row = table["code: stdlib val"]
    ours, rust = row["tok (512)"], row["rustbpe (512)"]
    assert 1.5 < ours < 5
    assert abs(ours - rust) / rust < 0.02  # same algorithm, same data, same split pattern


def test_train_on_local_files_and_bad_input(repo_root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text("\n".join(json.dumps({"text": f"document number {i} says hello"}) for i in range(200)))
    (data / "b.jsonl").write_text("\n".join(json.dumps({"text": f"validation row {i}"}) for i in range(20)))
    (tmp_path / "fox.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    tok_train = load_script(repo_root, "tok_train")
    for spec in (str(data), str(tmp_path / "fox.txt")):
        out = tok_train.main(["--output_dir", str(tmp_path / "tok"), "--vocab_size", "300", "--data", spec])
        tok = AutoTokenizer.from_pretrained(out)
        assert tok.decode(tok.encode(" quick brown fox says")) == " quick brown fox says"
    assert tok.convert_ids_to_tokens(tok.encode(" quick")) == ["Ġquick"]  # learned from the .txt file
    bad = tmp_path / "bad"  # several files: all but the last (sorted) are the train split
    bad.mkdir()
    (bad / "a.jsonl").write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    (bad / "z.jsonl").write_text('{"text": "validation"}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl.*2"):
        tok_train.main(["--output_dir", str(tmp_path / "bad_out"), "--data", str(bad)])
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        tok_train.main(["--output_dir", str(tmp_path / "x"), "--data", str(tmp_path / "missing.txt")])


def test_tokenizer_bench_reports_ratios(capsys):
    result = tokenizer_bench.main(["--vocab_size", "512", "--max_chars", "300000", "--repeats", "1"])
    printed = capsys.readouterr().out
    assert result["same_ids"] and result["auto"] == "tiktoken"
    assert "| train | rustbpe |" in printed and "| encode | ours, hf path |" in printed
    assert "same ids: yes" in printed and "uses the tiktoken path" in printed
    # both trainers learn the same merges, so they compress alike
    ours, rust = result["bytes_per_token"]["ours"], result["bytes_per_token"]["rustbpe"]
    assert abs(ours - rust) / rust < 0.02
    with pytest.raises(SystemExit):
        tokenizer_bench.main(["--repeats", "0"])
