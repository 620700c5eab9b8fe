"""HumanEval (OpenAI, arXiv:2107.03374) as a chat task: write the function, pass its unit tests.

Rows come from a local `HumanEval.jsonl[.gz]` (the file `../shared/data/chat_eval/` holds) or the hub
dataset `openai/openai_humaneval`; each has `task_id`, `prompt` (signature + docstring), `test`
(a `check(candidate)` function), `entry_point` and `canonical_solution`. As in nanochat, the user turn
is the prompt and the reference assistant turn is the whole function (prompt + canonical solution);
the model's reply may wrap its code in a Markdown fence. Completions run in the sandbox of
`sandbox.py` (the isolation level is named in the results) through the `humaneval` evaluate metric
(pass@k); a completion passes only when the problem's tests ran to the end.
"""

import re
from pathlib import Path

from ..tasks.base import Task, rows_to_dataset
from . import load_metric
from .execution import check_humaneval, humaneval_solution, humaneval_test, sandbox_isolation

HUB_ID = "openai/openai_humaneval"
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_REQUIRED = ("task_id", "prompt", "test", "entry_point", "canonical_solution")


def extract_code(completion: str) -> str:
    """The code in a reply: the first fenced block (an unclosed final fence counts), else the text."""
    match = _FENCE.search(completion)
    if match:
        return match.group(1)
    start = re.search(r"```(?:python|py)?[ \t]*\n", completion)
    return completion[start.end():] if start else completion


def load_problems(path: str | Path | None = None) -> list[dict]:
    """HumanEval problems from a local jsonl / jsonl.gz (errors name file and line) or the hub."""
    if path is None:
        import datasets

        return [dict(r) for r in datasets.load_dataset(HUB_ID, split="test")]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HumanEval data file {path} does not exist")
    from ..tasks.base import iter_jsonl

    problems = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in _REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise ValueError(f"{path}, line {lineno}: HumanEval row lacks {missing}")
        problems.append(row)
    if not problems:
        raise ValueError(f"{path}: no HumanEval problems")
    return problems


class HumanEval(Task):
    """HumanEval rows with `messages` plus the problem fields; `evaluate` runs the tests."""

    name = "humaneval"
    eval_type = "generative"

    def __init__(self, path: str | Path | None = None, timeout: float = 5.0, memory_mb: int = 1024):
        self.timeout, self.memory_mb = timeout, memory_mb
        rows = [{"messages": [{"role": "user", "content": p["prompt"]},
                              {"role": "assistant", "content": p["prompt"] + p["canonical_solution"]}],
                 **{k: p[k] for k in _REQUIRED}} for p in load_problems(path)]
        super().__init__(rows_to_dataset(rows))

    @property
    def isolation(self) -> str:
        """The sandbox level the programs run at on this machine (named in the chat-eval output)."""
        return sandbox_isolation().describe()

    def evaluate(self, row: dict, completion: str) -> bool:
        return check_humaneval(row, extract_code(completion), self.timeout, self.memory_mb).passed

    def evaluate_many(self, rows: list[dict], completions: list[list[str]], num_workers: int = 2) -> list[list[bool]]:
        """Outcomes for several samples per problem, run concurrently through the `humaneval` metric."""
        if not rows:
            return []
        refs = [humaneval_test(r) for r in rows]
        preds = [[humaneval_solution(r, extract_code(c)) for c in samples] for r, samples in zip(rows, completions)]
        out = load_metric("humaneval").compute(predictions=preds, references=refs, k=[1], timeout=self.timeout,
                                               memory_mb=self.memory_mb, num_workers=num_workers)
        return [[status == "passed" for status in statuses] for statuses in out["results"]]
