"""hf_nanogpt.cli: every script answers an expected failure with one clear line and no traceback
(checked before anything heavy loads), `--debug` / HF_NANOGPT_DEBUG=1 bring the traceback back, and
bugs keep theirs. Scripts run in-process through `runpy` as `__main__`."""

import argparse
import runpy
import sys

import pytest

from hf_nanogpt.cli import nonnegative_int, port, positive_int, run_script

def run(repo_root, script: str, argv: list[str], capsys) -> tuple[int, str]:
    old = sys.argv
    sys.argv = [str(repo_root / "scripts" / f"{script}.py"), *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = old
    code, err = exit_info.value.code, capsys.readouterr().err
    if isinstance(code, str):  # sys.exit("message"): the interpreter prints it and exits with status 1
        code, err = 1, err + code
    return code, err

@pytest.fixture
def not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    return str(tmp_path)

@pytest.mark.parametrize("script, argv, message", [
    ("chat_web", ["--model", "nosuch"], "model or tokenizer folder nosuch does not exist"),

    ("chat_cli", ["-i", "nosuch", "-p", "hi"], "model or tokenizer folder nosuch does not exist"),
    ("chat_eval", ["-i", "NOT_A_MODEL"], "has no config.json: expected a model folder"),
    ("base_eval", ["--model", "NOT_A_MODEL"], "has no config.json: expected a model folder"),
    ("pretrain", ["--adam_beta1=2"], "recipe key adam_beta1=2 is invalid"),
    ("midtrain", ["recipes/tiny-mid.yaml", "--grad_clip=-1"], "recipe key grad_clip=-1 is invalid"),
    ("sft", ["recipes/tiny.yaml"], "is a recipe of stage 'base'"),
    ("tok_train", ["--data", "nosuch/*.txt", "--output_dir", "NOT_A_MODEL/tok"], "nosuch"),
    ("tok_eval", ["--tokenizer", "NOT_A_MODEL"], "instantiate the backend tokenizer"),
    ("push_to_hub", ["nosuch", "me/model", "--card_only"], "nosuch"),
])
def test_expected_failures_are_one_line(repo_root, capsys, monkeypatch, not_a_model, script, argv, message):
    monkeypatch.chdir(repo_root)
    monkeypatch.setenv("HF_NANOGPT_BASE_DIR", not_a_model)
    monkeypatch.delenv("HF_NANOGPT_DEBUG", raising=False)
    code, err = run(repo_root, script, [a.replace("NOT_A_MODEL", not_a_model) for a in argv], capsys)
    assert code == 1 and "Traceback" not in err, err
    assert message in err, err
    if script != "chat_cli":  # chat_cli says "chat_cli: <message>" itself
        assert f"{script}.py: error: " in err and "--debug" in err  # and how to get the traceback

def test_argument_checks_come_first(repo_root, capsys):
    code, err = run(repo_root, "chat_web", ["--workers", "0"], capsys)
    assert code == 2 and "argument --workers: must be >= 1, got 0" in err and "Traceback" not in err
    code, err = run(repo_root, "chat_web", ["--port", "70000", "--max_queue", "-1"], capsys)
    assert code == 2 and "must be in [0, 65535], got 70000" in err

def test_debug_flag_and_variable_show_the_traceback(repo_root, capsys, monkeypatch):
    monkeypatch.setenv("HF_NANOGPT_BASE_DIR", "/nonexistent")
    old = sys.argv
    for argv, env in ((["--model", "nosuch", "--debug"], None), (["--model", "nosuch"], "1")):
        if env:
            monkeypatch.setenv("HF_NANOGPT_DEBUG", env)
        sys.argv = [str(repo_root / "scripts" / "chat_web.py"), *argv]
        try:
            with pytest.raises(FileNotFoundError, match="nosuch does not exist"):
                runpy.run_path(sys.argv[0], run_name="__main__")
        finally:
            sys.argv = old

def test_run_script_rules(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py"])

    def fails(err):
        def main():
            raise err
        return main

    with pytest.raises(SystemExit) as exit_info:
        run_script(fails(ValueError("recipe key x is bad")))
    assert exit_info.value.code == 1 and capsys.readouterr().err.startswith("tool.py: error: recipe key x is bad")

    class Diverged(RuntimeError):
        expected = True

    with pytest.raises(SystemExit):
        run_script(fails(Diverged("non-finite loss at step 3")))
    assert "non-finite loss at step 3" in capsys.readouterr().err
    with pytest.raises(TypeError):  # a bug keeps its traceback
        run_script(fails(TypeError("unsupported operand")))
    with pytest.raises(SystemExit) as exit_info:
        run_script(fails(KeyboardInterrupt()))
    assert exit_info.value.code == 130 and "interrupted" in capsys.readouterr().err
    seen = []
    monkeypatch.setattr(sys, "argv", ["tool.py", "--debug", "--x=1"])
    with pytest.raises(ValueError):
        run_script(lambda: seen.append(list(sys.argv)) or (_ for _ in ()).throw(ValueError("v")))
    assert seen == [["tool.py", "--x=1"]]  # --debug is taken off before the script parses its arguments

def test_argument_types():
    assert positive_int("3") == 3 and nonnegative_int("0") == 0 and port("8000") == 8000
    for parse, text in ((positive_int, "0"), (nonnegative_int, "-1"), (port, "65536"), (positive_int, "two")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
