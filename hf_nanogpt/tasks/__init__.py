"""Chat tasks (conversations in the tokenizer's chat format) and mixtures of them.

    task = get_task("gsm8k", split="test", path="../shared/data/chat_eval/gsm8k_test.jsonl")
    task[0]["messages"], task[0]["answer"], task.evaluate(task[0], "... #### 72")
    mixture = build_mixture([{"task": "spelling_bee", "size": 2000}, {"task": "arithmetic", "repeat": 2}])

Each task loads from its hub id (`split=`) or from a local file in the hub schema (`path=`); the
synthetic ones (`simple_spelling`, `spelling_bee`, `arithmetic`) are generated (`size=`, `seed=`).
"""

import importlib

from .base import Task, check_conversation, extract_answer, messages_feature
from .mixture import build_mixture

# name -> (module, class, fixed keyword arguments)
TASKS = {
    "arc_easy": ("arc", "ARC", {"subset": "ARC-Easy"}),
    "arc_challenge": ("arc", "ARC", {"subset": "ARC-Challenge"}),
    "mmlu": ("mmlu", "MMLU", {}),
    "gsm8k": ("gsm8k", "GSM8K", {}),
    "smoltalk": ("smoltalk", "SmolTalk", {}),
    "customjson": ("customjson", "CustomJSON", {}),
    "simple_spelling": ("spelling", "SimpleSpelling", {}),
    "spelling_bee": ("spelling", "SpellingBee", {}),
    "arithmetic": ("arithmetic", "Arithmetic", {}),
}


def get_task(name: str, **kwargs) -> Task:
    """The task called `name` (one of `TASKS`), built with `kwargs` (`split`, `path`, `size`, `seed`, ...)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    module, cls_name, fixed = TASKS[name]
    cls = getattr(importlib.import_module(f"{__name__}.{module}"), cls_name)
    try:
        return cls(**fixed, **kwargs)
    except TypeError as err:
        if "argument" not in str(err):
            raise
        import inspect

        valid = [p for p in inspect.signature(cls).parameters if p not in fixed]
        raise TypeError(f"task {name!r}: {err}; valid options: {', '.join(valid)}") from None


__all__ = ["TASKS", "Task", "get_task", "build_mixture", "check_conversation", "extract_answer", "messages_feature"]
