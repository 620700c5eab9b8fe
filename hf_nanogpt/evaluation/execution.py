"""Run untrusted, model-written Python (HumanEval) in the sandbox, and pass@k.

The sandbox itself lives in `hf_nanogpt.evaluation.sandbox`: bubblewrap namespaces (or a fresh
unprivileged uid, or only resource limits, whichever the machine allows; every result names the
level in `ExecutionResult.isolation`), its own process group and pid namespace killed as a whole at
the timeout, a private temporary folder as the only writable place, and "passed" meaning the
harness's own success marker after the program's last line ran, never a bare exit status 0.

This module builds the HumanEval programs (solution, then the problem's `check`), runs them there,
and computes the unbiased pass@k estimator.
"""

from collections.abc import Sequence

from .sandbox import LEVELS, ExecutionResult, Isolation, run_program, sandbox_isolation

#: status values of an `ExecutionResult`
STATUSES = ("passed", "failed", "timeout")


def humaneval_solution(problem: dict, completion: str) -> str:
    """The solution code for a HumanEval `problem` given a model's `completion`.

    `completion` is either a function body continuing `problem["prompt"]` (the classic HumanEval
    protocol) or a full solution that itself defines `entry_point` (what a chat model writes); in the
    second case the prompt's imports are kept and its stub is not repeated.
    """
    for key in ("prompt", "test", "entry_point"):
        if key not in problem:
            raise KeyError(f"humaneval: problem lacks the key {key!r} (has {sorted(problem)})")
    if f"def {problem['entry_point']}(" in completion:
        imports = "\n".join(l for l in problem["prompt"].splitlines() if l.startswith(("import ", "from ")))
        return imports + "\n\n" + completion
    return problem["prompt"] + completion


def humaneval_test(problem: dict) -> str:
    """The test code run after a solution: the problem's `check` function and the call to it."""
    return f"{problem['test']}\n\ncheck({problem['entry_point']})\n"


def humaneval_program(problem: dict, completion: str) -> str:
    """The whole program that checks `completion` against `problem` (solution, then tests)."""
    return humaneval_solution(problem, completion) + "\n\n" + humaneval_test(problem)


def check_humaneval(problem: dict, completion: str, timeout: float = 5.0, memory_mb: int = 1024) -> ExecutionResult:
    """Execute `completion` against `problem`'s tests in the sandbox."""
    return run_program(humaneval_program(problem, completion), timeout=timeout, memory_mb=memory_mb)


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimate for one problem (Chen et al. 2021, arXiv:2107.03374, eq. 1):
    1 - C(n - c, k) / C(n, k), evaluated as a product to stay exact for large n."""
    n, c = num_samples, num_correct
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k: need 0 <= num_correct <= num_samples and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def mean_pass_at_k(outcomes: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """`{"pass@k": mean over problems}` for each k no larger than the smallest sample count."""
    if not outcomes:
        raise ValueError("mean_pass_at_k: no problems")
    n_min = min(len(o) for o in outcomes)
    return {f"pass@{k}": sum(pass_at_k(len(o), sum(map(bool, o)), k) for o in outcomes) / len(outcomes)
            for k in ks if k <= n_min}


__all__ = ["ExecutionResult", "Isolation", "LEVELS", "STATUSES", "check_humaneval", "humaneval_program",
           "humaneval_solution", "humaneval_test", "mean_pass_at_k", "pass_at_k", "run_program", "sandbox_isolation"]
