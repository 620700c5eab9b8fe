"""The HumanEval sandbox (hf_nanogpt.evaluation.execution), pass@k and the `humaneval` metric module."""

import gzip
import json
import math
import os
import socket

import pytest

from hf_nanogpt.evaluation import load_metric
from hf_nanogpt.evaluation.execution import (
    check_humaneval,
    humaneval_program,
    mean_pass_at_k,
    pass_at_k,
    run_program,
)


@pytest.fixture(scope="module")
def humaneval_problems(shared_data):
    with gzip.open(shared_data / "chat_eval" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def test_correct_and_wrong_solution_of_a_real_problem(humaneval_problems):
    problem = humaneval_problems[0]
    good = check_humaneval(problem, problem["canonical_solution"], timeout=10)
    assert good.status == "passed", good.stderr
    bad = check_humaneval(problem, "    return not " + problem["canonical_solution"].strip().splitlines()[-1].split("return ")[-1] + "\n")
    assert bad.status == "failed"
    assert "AssertionError" in bad.stderr


def test_full_function_completion_keeps_prompt_imports(humaneval_problems):
    """A chat model writes the whole function; the prompt's imports must still be there."""
    problem = humaneval_problems[0]  # uses `from typing import List`
    full = problem["prompt"].split("def ")[0].replace("from typing import List", "") + \
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + problem["canonical_solution"]
    program = humaneval_program(problem, full)
    assert program.count("def has_close_elements(") == 1 and "from typing import List" in program
    assert check_humaneval(problem, full, timeout=10).passed


def test_infinite_loop_is_killed_at_the_timeout():
    result = run_program("while True:\n    pass\n", timeout=1.0)
    assert result.status == "timeout" and result.returncode is None  # killed by the runner, not finished


def test_os_system_and_friends_are_disabled(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    for code in (f"import os\nos.system('rm -f {victim}')\n",
                 f"import os\nos.remove({str(victim)!r})\n",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                 "import subprocess\n",
                 "import os\nos.fork()\n",
                 "import ctypes\n"):
        result = run_program(code, timeout=5)
        assert result.status == "failed", code
        assert ("PermissionError" in result.stderr) or ("ModuleNotFoundError" in result.stderr), result.stderr
    assert victim.read_text() == "still here"


def test_no_network_and_a_private_temp_dir():
    result = run_program("import socket\n", timeout=5)
    assert result.status == "failed" and "socket" in result.stderr
    result = run_program("import os\nprint(os.getcwd())\nprint(os.environ['HF_NANOGPT_SANDBOX_NETWORK'])\n", timeout=5)
    assert result.passed, result.stderr
    cwd, network = result.stdout.splitlines()
    assert os.path.basename(cwd).startswith("hf_nanogpt_sandbox_")
    assert not os.path.exists(cwd), "the temporary directory must be removed after the run"
    assert network  # "network namespace" here (root); otherwise says why not


def test_memory_limit_and_output_cap():
    result = run_program("x = bytearray(2 * 1024**3)\n", timeout=10, memory_mb=256)
    assert result.status == "failed" and "MemoryError" in result.stderr
    result = run_program("while True:\n    print('x' * 1000)\n", timeout=10, max_output_bytes=100_000)
    assert result.status == "failed" and len(result.stdout) <= 100_000


def test_pass_at_k_hand_checked():
    # n=5 samples, c=2 correct, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    assert pass_at_k(200, 13, 10) == pytest.approx(1 - math.comb(187, 10) / math.comb(200, 10))
    assert mean_pass_at_k([[True, False], [False, False]], [1, 2]) == {"pass@1": 0.25, "pass@2": 0.5}
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        pass_at_k(3, 1, 4)


def test_humaneval_metric_loads_by_path_and_scores(humaneval_problems, monkeypatch):
    # No network: any connection or name lookup the loader attempted would fail.
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    metric = load_metric("humaneval")
    problems = humaneval_problems[:2]
    preds = [[p["prompt"] + p["canonical_solution"], p["prompt"] + "    return None\n"] for p in problems]
    refs = [p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems]
    out = metric.compute(predictions=preds, references=refs, k=[1, 2], timeout=10)
    assert out["results"] == [["passed", "failed"], ["passed", "failed"]]
    assert out["pass@1"] == pytest.approx(0.5) and out["pass@2"] == pytest.approx(1.0)


@pytest.mark.parametrize("trick, right_status", [
    ("\nimport sys\nsys.exit(0)\n", "failed"),  # leaves before check() runs: even a right answer is untested
    ("\nimport os\nos._exit(0)\n", "failed"),
    ("\nimport atexit, os\natexit.register(lambda: os._exit(0))\n", "passed"),  # exit 0 after a failed assert
])
def test_a_wrong_solution_that_exits_with_status_0_does_not_pass(humaneval_problems, trick, right_status):
    problem = humaneval_problems[0]
    result = check_humaneval(problem, "    return None\n" + trick, timeout=10)
    assert result.status == "failed" and result.returncode in (0, 1), result
    assert check_humaneval(problem, problem["canonical_solution"] + trick, timeout=10).status == right_status


def test_the_metric_names_the_isolation_level(humaneval_problems):
    from hf_nanogpt.evaluation.execution import sandbox_isolation

    p = humaneval_problems[0]
    out = load_metric("humaneval").compute(predictions=[[p["prompt"] + p["canonical_solution"]]],
                                           references=[p["test"] + f"\ncheck({p['entry_point']})\n"], k=[1])
    assert out["pass@1"] == 1.0 and out["isolation"] == sandbox_isolation().describe()
