"""CORE (DCLM, arXiv:2406.11794): per-task accuracy, centered accuracy and their mean.

An `evaluate` metric that ships with hf_nanogpt and loads by path, offline:

    import evaluate
    from hf_nanogpt.evaluation import metric_path
    core = evaluate.load(metric_path("core"))
    core.compute(predictions=[0, 2, -1], references=[0, 1, 0], tasks=["copa", "copa", "lambada_openai"],
                 random_baselines={"copa": 50, "lambada_openai": 0}, expected_tasks=["copa", "lambada_openai", "squad"])

The model-running half (prompts, few-shot sampling, scoring) is `hf_nanogpt.evaluation.core`.
"""

import datasets
import evaluate

_DESCRIPTION = """CORE is the mean over tasks of the centered accuracy (acc - b) / (1 - b), where b is the
task's random-guess accuracy, so 0 means chance and 1 means perfect on every task."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: index of the option the model chose, one per example. For multiple_choice and
        schema tasks it is the option with the lowest mean continuation loss; language_modeling tasks
        have one option, chosen (0) only when greedy decoding reproduces the whole continuation, else -1.
    references: index of the correct option (0 for language_modeling tasks).
    tasks: the task label of each example (e.g. "arc_easy").
    random_baselines: {task label: random-guess accuracy in percent, as DCLM writes it (25 = 25%)};
        every task in `tasks` needs one.
    expected_tasks: optional list of the task labels the full benchmark has; the ones absent from
        `tasks` are returned under "tasks_missing" so a partial CORE is never mistaken for the full one.
Returns:
    core: mean centered accuracy over the tasks present (None when there are none),
    accuracy, centered, num_examples: dicts keyed by task label,
    tasks_missing: expected tasks that had no examples.
"""

_CITATION = """@article{li2024datacomplm, title={DataComp-LM: In search of the next generation of training sets
for language models}, author={Li, Jeffrey and others}, journal={arXiv:2406.11794}, year={2024}}"""


def centered_accuracy(accuracy: float, random_baseline_pct: float) -> float:
    """(acc - b) / (1 - b) with b = random_baseline_pct / 100."""
    b = random_baseline_pct / 100.0
    return (accuracy - b) / (1.0 - b)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Core(evaluate.Metric):
    """The CORE aggregate of per-example choices over DCLM's in-context-learning tasks."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int64"),
                "references": datasets.Value("int64"),
                "tasks": datasets.Value("string"),
            }),
        )

    def _compute(self, predictions, references, tasks, random_baselines=None, expected_tasks=None):
        if random_baselines is None:
            raise ValueError("core: pass random_baselines={task: percent} for every task")
        correct, count = {}, {}
        for pred, ref, task in zip(predictions, references, tasks):
            count[task] = count.get(task, 0) + 1
            correct[task] = correct.get(task, 0) + int(pred == ref)
        accuracy, centered = {}, {}
        for task in count:
            if task not in random_baselines:
                raise ValueError(f"core: no random baseline for task {task!r} (have {sorted(random_baselines)})")
            b = float(random_baselines[task])
            if not 0.0 <= b < 100.0:
                raise ValueError(f"core: random baseline of {task!r} must be a percentage in [0, 100), got {b}")
            accuracy[task] = correct[task] / count[task]
            centered[task] = centered_accuracy(accuracy[task], b)
        missing = [t for t in (expected_tasks or []) if t not in count]
        return {
            "core": sum(centered.values()) / len(centered) if centered else None,
            "accuracy": accuracy,
            "centered": centered,
            "num_examples": count,
            "tasks_missing": missing,
        }
