"""ChatCORE (nanochat): per-task accuracy of a chat model and the mean centered accuracy over tasks.

An `evaluate` metric that ships with hf_nanogpt and loads by path, offline:

    import evaluate
    from hf_nanogpt.evaluation import metric_path
    chat = evaluate.load(metric_path("chat_core"))
    chat.compute(predictions=[1, 0, 1, 0.5], tasks=["ARC-Easy", "ARC-Easy", "GSM8K", "HumanEval"])

Every example carries a score in [0, 1]: 1/0 for right/wrong (ARC, MMLU, GSM8K, SpellingBee), or a
per-problem pass@k estimate (HumanEval). The model-running half is `hf_nanogpt.evaluation.chat`.
"""

import datasets
import evaluate

# nanochat's chance levels: 4-way multiple choice for ARC and MMLU, 0 for open-ended generation.
DEFAULT_BASELINES = {
    "ARC-Easy": 0.25,
    "ARC-Challenge": 0.25,
    "MMLU": 0.25,
    "GSM8K": 0.0,
    "HumanEval": 0.0,
    "SpellingBee": 0.0,
}

_DESCRIPTION = """ChatCORE is nanochat's single number for a chat model: the mean over its chat tasks of the
centered accuracy (acc - b) / (1 - b), with b = 0.25 for the 4-way multiple-choice tasks (ARC-Easy,
ARC-Challenge, MMLU) and 0 for the generative ones (GSM8K, HumanEval, SpellingBee)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the score of each example in [0, 1] (1 = correct; a pass@k estimate for code).
    tasks: the task name of each example (e.g. "ARC-Easy").
    baselines: optional {task: chance accuracy as a fraction}; defaults to nanochat's table, and any
        task outside it needs an entry.
    expected_tasks: the task names ChatCORE is defined over (default: nanochat's six); the ones
        without examples are returned under "tasks_missing".
Returns:
    chatcore: mean centered accuracy over the tasks present (None when there are none),
    complete: whether every expected task was present (nanochat reports ChatCORE only then),
    accuracy, centered, num_examples: dicts keyed by task name,
    tasks_missing: expected tasks that had no examples.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ChatCore(evaluate.Metric):
    """Per-task accuracy and ChatCORE from per-example scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="nanochat (Karpathy, 2025), scripts/chat_eval.py",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("float64"),
                "tasks": datasets.Value("string"),
            }),
        )

    def _compute(self, predictions, tasks, baselines=None, expected_tasks=None):
        table = dict(DEFAULT_BASELINES)
        table.update(baselines or {})
        total, count = {}, {}
        for score, task in zip(predictions, tasks):
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"chat_core: score {score} of a {task!r} example is outside [0, 1]")
            count[task] = count.get(task, 0) + 1
            total[task] = total.get(task, 0.0) + float(score)
        accuracy, centered = {}, {}
        for task in count:
            if task not in table:
                raise ValueError(f"chat_core: no baseline for task {task!r}; pass baselines={{{task!r}: ...}}")
            b = float(table[task])
            if not 0.0 <= b < 1.0:
                raise ValueError(f"chat_core: baseline of {task!r} must be a fraction in [0, 1), got {b}")
            accuracy[task] = total[task] / count[task]
            centered[task] = (accuracy[task] - b) / (1.0 - b)
        expected = list(DEFAULT_BASELINES) if expected_tasks is None else list(expected_tasks)
        missing = [t for t in expected if t not in count]
        return {
            "chatcore": sum(centered.values()) / len(centered) if centered else None,
            "complete": not missing,
            "accuracy": accuracy,
            "centered": centered,
            "num_examples": count,
            "tasks_missing": missing,
        }
