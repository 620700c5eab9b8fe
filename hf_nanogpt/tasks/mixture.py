"""Task mixtures: several tasks, repeated or capped, shuffled into one `datasets.Dataset`.

A mixture is a list of entries, as a recipe writes it (nanochat's mid-training mixture, shrunk):

    - {task: smoltalk, split: train, stop: 10000}       # the first 10000 rows
    - {task: mmlu, split: train}
    - {task: gsm8k, path: ../shared/data/chat_eval/gsm8k_train.jsonl}
    - {task: customjson, path: identity.jsonl, repeat: 2}    # every row twice
    - {task: spelling_bee, size: 2000, weight: 0.5}     # a seeded half of its rows

`optional: true` skips an entry whose local file does not exist (with a warning) instead of failing,
for data a user may not have made (nanochat's identity conversations). `stop: N` keeps the first N rows
of the task; then `repeat: k` (an integer) takes every row k times,
or `weight: w` (a float) takes floor(w) copies plus a seeded random fraction w - floor(w) of the rows;
other keys are passed to the task (`split`, `path`, `size`, `seed`, ...). The result has the columns
`messages` and `task` and is shuffled with `seed` (the same mixture and seed give the same rows in the
same order).
"""

import logging

import numpy as np

logger = logging.getLogger(__name__)

MIXTURE_KEYS = ("task", "repeat", "weight", "stop", "optional")


def _entry_rows(entry: dict, index: int, seed: int):
    import datasets

    from . import get_task

    if not isinstance(entry, dict) or "task" not in entry:
        raise ValueError(f"mixture entry {index}: expected a mapping with a 'task' key, got {entry!r}")
    if "repeat" in entry and "weight" in entry:
        raise ValueError(f"mixture entry {index} ({entry['task']}): give 'repeat' or 'weight', not both")
    repeat, weight, stop = entry.get("repeat", 1), entry.get("weight"), entry.get("stop")
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"mixture entry {index} ({entry['task']}): repeat must be an integer >= 1, got {repeat!r}")
    if weight is not None and (not isinstance(weight, (int, float)) or weight <= 0):
        raise ValueError(f"mixture entry {index} ({entry['task']}): weight must be a number > 0, got {weight!r}")
    if stop is not None and (not isinstance(stop, int) or stop < 1):
        raise ValueError(f"mixture entry {index} ({entry['task']}): stop must be an integer >= 1, got {stop!r}")
    try:
        task = get_task(entry["task"], **{k: v for k, v in entry.items() if k not in MIXTURE_KEYS})
    except FileNotFoundError as err:
        if not entry.get("optional"):
            raise
        logger.warning("mixture entry %d (%s) skipped, its data is missing: %s", index, entry["task"], err)
        return None
    ds = task.dataset.select_columns(["messages"])
    if stop is not None:
        ds = ds.select(range(min(stop, len(ds))))
    n = len(ds)
    if weight is not None:
        whole, frac = int(weight), weight - int(weight)
        extra = np.random.default_rng([seed, index]).permutation(n)[:int(round(frac * n))]
        indices = np.concatenate([np.tile(np.arange(n), whole), np.sort(extra)])
    else:
        indices = np.tile(np.arange(n), repeat)
    ds = ds.select(indices.tolist())
    return ds.add_column("task", [entry["task"]] * len(ds), feature=datasets.Value("string"))


def build_mixture(spec: list[dict], seed: int = 0):
    """The mixture `spec` (see the module docstring) as a shuffled `datasets.Dataset` with columns
    `messages` and `task`."""
    import datasets

    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"a mixture is a non-empty list of task entries, got {spec!r}")
    parts = [p for p in (_entry_rows(entry, i, seed) for i, entry in enumerate(spec)) if p is not None]
    if not parts:
        raise ValueError("the mixture has no rows: every entry was optional and missing")
    mixed = datasets.concatenate_datasets(parts)
    if len(mixed) == 0:
        raise ValueError("the mixture has no rows")
    return mixed.shuffle(seed=seed).flatten_indices()
