"""Evaluation: bits per byte, CORE, chat evals, and the `evaluate` metric modules behind them.

- `bpb.evaluate_bpb`: bits per byte of a base model on validation batches (tokenizer-independent loss).
- `core.evaluate_core`: DCLM's CORE benchmark from the eval bundle (`core.yaml` + gauntlet jsonl).
- `chat.evaluate_chat`: ARC-Easy/Challenge, MMLU (answer-letter logits), GSM8K, HumanEval, SpellingBee
  (generation), and ChatCORE.
- `humaneval.HumanEval`: HumanEval as a chat task, judged in the sandbox.
- `execution`: the sandbox that runs model-written programs, and pass@k.
- `base`: fixed-prompt samples and the CORE table for `scripts/base_eval.py`.

The aggregation steps are `evaluate` metric modules shipped inside this package under `metrics/`
(`core`, `chat_core`, `humaneval`); they load by path, with no network:
`evaluate.load(metric_path("core"))`, or `load_metric("core")`.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = ("core", "chat_core", "humaneval")


def metric_path(name: str) -> str:
    """The folder of the shipped `evaluate` module `name` (what `evaluate.load` takes)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; the package ships {list(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a shipped metric by path, kept in memory (no cache files, no network)."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "metric_path", "load_metric"]
