"""HumanEval-style functional correctness: run candidate programs against tests in a sandbox, pass@k.

An `evaluate` metric that ships with hf_nanogpt and loads by path, offline:

    import evaluate
    from hf_nanogpt.evaluation import metric_path
    he = evaluate.load(metric_path("humaneval"))
    he.compute(predictions=[["def add(a, b):\\n    return a + b\\n"]],
               references=["assert add(2, 3) == 5\\n"], k=[1])

Each candidate runs as `candidate + "\\n\\n" + reference` in a fresh, sandboxed Python process
(bubblewrap namespaces or a fresh unprivileged uid where the machine allows, time and memory limits,
no network, a private temporary directory: see `hf_nanogpt.evaluation.sandbox`). A candidate passes
only when the harness's success marker follows the reference's last line, so `sys.exit(0)` or
`os._exit(0)` before a failing assert is a failure. The result names the isolation level.
"""

import datasets
import evaluate
from concurrent.futures import ThreadPoolExecutor
from hf_nanogpt.evaluation.execution import mean_pass_at_k
from hf_nanogpt.evaluation.execution import run_program
from hf_nanogpt.evaluation.execution import sandbox_isolation

_DESCRIPTION = """Executes each candidate solution together with its test code and reports the unbiased
pass@k estimator of Chen et al. (2021), averaged over problems."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: for each problem, a list of candidate programs (n samples).
    references: for each problem, the test code appended to a candidate (it must fail by raising,
        e.g. `check(entry_point)` with asserts).
    k: list of k values for pass@k (each must be <= the number of candidates per problem).
    timeout: wall-clock seconds per run (default 5).
    memory_mb: address-space limit per run (default 1024).
    num_workers: programs run concurrently (default 2; each is its own process).
Returns:
    pass@k for each k, "results": per problem, the status of each candidate
    ("passed", "failed" or "timeout"), and "isolation": the sandbox level the programs ran at.
"""

_CITATION = """@article{chen2021codex, title={Evaluating Large Language Models Trained on Code},
author={Chen, Mark and others}, journal={arXiv:2107.03374}, year={2021}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Humaneval(evaluate.Metric):
    """pass@k of sandboxed program execution."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Value("string"),
            }),
        )

    def _compute(self, predictions, references, k=(1,), timeout=5.0, memory_mb=1024, num_workers=2):
        if len(predictions) != len(references):
            raise ValueError(f"humaneval: {len(predictions)} prediction lists but {len(references)} references")
        for i, cands in enumerate(predictions):
            if not cands:
                raise ValueError(f"humaneval: problem {i} has no candidate programs")
        jobs = [(i, cand + "\n\n" + ref) for i, (cands, ref) in enumerate(zip(predictions, references)) for cand in cands]
        with ThreadPoolExecutor(max_workers=max(1, int(num_workers))) as pool:
            runs = list(pool.map(lambda job: run_program(job[1], timeout=timeout, memory_mb=memory_mb), jobs))
        statuses = [[] for _ in predictions]
        for (i, _), run in zip(jobs, runs):
            statuses[i].append(run.status)
        too_big = [kk for kk in k if kk > min(len(s) for s in statuses)]
        if too_big:
            raise ValueError(f"humaneval: k={too_big} exceeds the number of candidates per problem")
        scores = mean_pass_at_k([[s == "passed" for s in row] for row in statuses], list(k))
        return {**scores, "results": statuses, "isolation": sandbox_isolation().describe()}
