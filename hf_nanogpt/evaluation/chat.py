"""Chat-model evaluation (nanochat's chat_eval): ARC-Easy, ARC-Challenge, MMLU, GSM8K, HumanEval,
SpellingBee, and ChatCORE over the tasks run.

- Categorical tasks (ARC, MMLU): the conversation without its answer is rendered up to
  `<|assistant_start|>`, and the model's logits at that position are compared over the answer letters
  only (A/B/C/D...): the highest wins. No sampling, one forward pass per batch of questions
  (right-padded; each row reads its own last position).
- Generative tasks (GSM8K, HumanEval, SpellingBee): `num_samples` replies per problem from the
  KV-cached `Engine`, with the calculator tool on; each reply is judged by the task (GSM8K and
  SpellingBee: exact match of the `#### N` number; HumanEval: its tests pass in the sandbox). A
  problem's score is the fraction of its samples that pass (the unbiased pass@1), and pass@k is
  reported for every requested k <= num_samples. `temperature=0` is greedy decoding.

Per-problem scores go through the `chat_core` evaluate metric, which gives each task's accuracy and
ChatCORE = mean centered accuracy (baseline 0.25 for the 4-way multiple-choice tasks, 0 for the
generative ones) over the tasks present, naming the ones missing. With several processes, rank r takes
problems r, r + world, ...; results are gathered on every rank.

Data: each task loads from a local file when one is found (the `../shared/data` eval bundle and
`chat_eval/` files, or `sources={"GSM8K": path}`), else from its hub dataset; `source="hub"` forces
the hub. ARC's local rows are the ARC test questions of the CORE bundle, turned into chat questions.
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import load_metric
from .distributed import gather_objects, rank_and_world
from .execution import mean_pass_at_k

CHAT_TASKS = ("ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "SpellingBee")
# Evaluated and reported like the others but not part of ChatCORE (nanochat's definition): the synthetic
# arithmetic-with-calculator task the tiny pipeline trains on.
EXTRA_TASKS = ("Arithmetic",)
SYNTHETIC_TASKS = ("SpellingBee", "Arithmetic")
_ALIASES = {name.lower().replace("-", "_"): name for name in CHAT_TASKS + EXTRA_TASKS} | {"spelling_bee": "SpellingBee"}


def canonical_task_name(name: str) -> str:
    """'arc_easy', 'ARC-Easy', 'gsm8k', ... -> the canonical name; ValueError listing the valid ones."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"unknown chat task {name!r}; choose from {', '.join(CHAT_TASKS + EXTRA_TASKS)}")
    return _ALIASES[key]


def local_source(name: str) -> Path | None:
    """The local data file of a chat task in the shared data folder, or None when there is none."""
    from ..paths import shared_data_dir

    shared = shared_data_dir()
    if shared is None:
        return None
    path = {"ARC-Easy": shared / "eval_bundle" / "core" / "arc_easy.jsonl",
            "ARC-Challenge": shared / "eval_bundle" / "core" / "arc_challenge.jsonl",
            "MMLU": shared / "chat_eval" / "mmlu_small.jsonl",
            "GSM8K": shared / "chat_eval" / "gsm8k_test.jsonl",
            "HumanEval": shared / "chat_eval" / "HumanEval.jsonl.gz"}.get(name)
    return path if path is not None and path.is_file() else None


def _arc_from_gauntlet(path: Path, name: str):
    """ARC questions stored in eval-gauntlet format (`query` "Question: ...", `choices`, `gold`)."""
    from ..tasks.base import Task, iter_jsonl, multiple_choice_row, rows_to_dataset

    rows = []
    for lineno, r in iter_jsonl(path):
        if not {"query", "choices", "gold"} <= set(r):
            raise ValueError(f"{path}, line {lineno}: expected query/choices/gold (eval-gauntlet ARC), got {sorted(r)}")
        rows.append(multiple_choice_row(r["query"].removeprefix("Question:").strip(), r["choices"], int(r["gold"])))
    task = Task(rows_to_dataset(rows))
    task.eval_type, task.name = "categorical", name
    return task


def resolve_source(name: str, source: str | Path = "auto") -> Path | str:
    """Where task `name` will be read from: a local file, "hub", or "synthetic" (SpellingBee, Arithmetic)."""
    name = canonical_task_name(name)
    if name in SYNTHETIC_TASKS:
        return "synthetic"
    if source == "hub":
        return "hub"
    if source == "auto":
        return local_source(name) or "hub"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: data file {path} does not exist")
    return path


def load_chat_task(name: str, source: str | Path = "auto", spelling_size: int = 256):
    """The test split of chat task `name`. `source`: "auto" (a local file when found, else the hub),
    "hub", or a path to a local file in the task's hub schema (ARC also takes eval-gauntlet rows)."""
    from ..tasks.arc import ARC
    from ..tasks.arithmetic import Arithmetic
    from ..tasks.gsm8k import GSM8K
    from ..tasks.mmlu import MMLU
    from ..tasks.spelling import SpellingBee
    from .humaneval import HumanEval

    name = canonical_task_name(name)
    where = resolve_source(name, source)
    if where == "synthetic":  # generated (SpellingBee from the built-in corpus's words)
        return (SpellingBee if name == "SpellingBee" else Arithmetic)(split="test", size=spelling_size)
    path = None if where == "hub" else where
    if name.startswith("ARC"):
        if path is not None and "query" in path.open(encoding="utf-8").readline():
            return _arc_from_gauntlet(path, name)
        return ARC(name, split="test", path=path)
    if name == "MMLU":
        return MMLU(split="test", path=path)
    if name == "GSM8K":
        return GSM8K(split="test", path=path)
    return HumanEval(path=path)


# ------------------------------------------------------------------------------------------ running
@torch.no_grad()
def run_categorical(model, tokenizer, task, indices: Sequence[int], batch_size: int = 8) -> list[dict]:
    """`{"index", "score", "prediction"}` per problem: the answer letter with the highest logit."""
    from ..tokenization import render_for_completion

    device = next(model.parameters()).device
    max_len = getattr(model.config, "max_position_embeddings", None)
    letter_ids: dict[str, int] = {}
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = [task[i] for i in indices[start:start + batch_size]]
        prompts = [render_for_completion(tokenizer, row["messages"]) for row in chunk]
        prompts = [p[-max_len:] if max_len else p for p in prompts]  # keep the end: the question and the cue
        width = max(len(p) for p in prompts)
        x = torch.full((len(prompts), width), tokenizer.bos_token_id, dtype=torch.long)
        for b, p in enumerate(prompts):
            x[b, :len(p)] = torch.tensor(p)
        logits = model(input_ids=x.to(device)).logits  # (B, T, V)
        for b, (row, p) in enumerate(zip(chunk, prompts)):
            for letter in row["letters"]:
                if letter not in letter_ids:
                    ids = tokenizer(letter, add_special_tokens=False)["input_ids"]
                    if len(ids) != 1:
                        raise ValueError(f"answer letter {letter!r} is {len(ids)} tokens; categorical scoring needs one")
                    letter_ids[letter] = ids[0]
            scores = logits[b, len(p) - 1, [letter_ids[l] for l in row["letters"]]]
            pred = row["letters"][int(scores.argmax())]
            out.append({"index": indices[start + b], "score": float(task.evaluate(row, pred)), "prediction": pred})
    return out


def run_generative(model, tokenizer, task, indices: Sequence[int], num_samples: int = 1, max_new_tokens: int = 512,
                   temperature: float = 0.0, top_k: int | None = 50, seed: int = 0, num_workers: int = 2) -> list[dict]:
    """`{"index", "outcomes", "score", "completion"}` per problem; score = fraction of samples correct.
    A prompt that does not fit the context leaves no room to answer and counts as wrong (`too_long`)."""
    from ..engine import Engine
    from ..tokenization import render_for_completion

    engine = Engine.from_tokenizer(model, tokenizer)
    rows, completions, too_long = [], [], []
    for i in indices:
        row = task[i]
        prompt = render_for_completion(tokenizer, row["messages"])
        if engine.max_context is not None and len(prompt) >= engine.max_context:
            samples, long = [""] * num_samples, True
        else:
            tokens, _ = engine.generate_batch(prompt, num_samples=num_samples, max_tokens=max_new_tokens,
                                              temperature=temperature, top_k=top_k, seed=seed + i)
            samples, long = [tokenizer.decode(t) for t in tokens], False
        rows.append(row)
        completions.append(samples)
        too_long.append(long)
    if hasattr(task, "evaluate_many"):  # HumanEval: run the sandboxed programs concurrently
        outcomes = task.evaluate_many(rows, completions, num_workers=num_workers)
    else:
        outcomes = [[bool(task.evaluate(row, c)) for c in samples] for row, samples in zip(rows, completions)]
    return [{"index": i, "outcomes": [o and not long for o in oc], "score": sum(oc) / len(oc) if not long else 0.0,
             "completion": samples[0], "too_long": long}
            for i, oc, samples, long in zip(indices, outcomes, completions, too_long)]


def evaluate_chat(model, tokenizer, tasks: Sequence[str] = CHAT_TASKS, max_problems: int | None = None,
                  batch_size: int = 8, num_samples: int = 1, max_new_tokens: int = 512, temperature: float = 0.0,
                  top_k: int | None = 50, seed: int = 0, ks: Sequence[int] = (1,), sources: dict | None = None,
                  spelling_size: int = 256, num_workers: int = 2, log: Callable[[str], None] | None = None) -> dict:
    """Evaluate a chat model on `tasks`; returns `{"tasks": {name: {...}}, "ChatCORE": ..., "chat_core": <metric>}`.

    Per task: `accuracy` (mean problem score), `num_problems`, `seconds`, `source`, and for generative
    tasks `pass@k` and `too_long`; `examples` holds the first few (prediction or completion) for a look.
    Every rank must call this; all get the same result.
    """
    names = [canonical_task_name(t) for t in tasks]
    rank, world = rank_and_world()
    sources = {canonical_task_name(k): v for k, v in (sources or {}).items()}
    was_training = model.training
    model.eval()
    results, per_task_scores = {}, {}
    try:
        for name in names:
            t0 = time.perf_counter()
            task = load_chat_task(name, sources.get(name, "auto"), spelling_size=spelling_size)
            n = len(task) if max_problems is None else min(max_problems, len(task))
            mine = list(range(rank, n, world))
            if task.eval_type == "categorical":
                local = run_categorical(model, tokenizer, task, mine, batch_size)
            else:
                local = run_generative(model, tokenizer, task, mine, num_samples, max_new_tokens, temperature,
                                       top_k, seed, num_workers)
            rows = sorted((r for part in gather_objects(local) for r in part), key=lambda r: r["index"])
            entry = {"num_problems": n, "seconds": time.perf_counter() - t0, "eval_type": task.eval_type,
                     "source": str(resolve_source(name, sources.get(name, "auto")))}
            if task.eval_type == "generative":
                entry.update(mean_pass_at_k([r["outcomes"] for r in rows], ks))
                entry["too_long"] = sum(r["too_long"] for r in rows)
            if getattr(task, "isolation", None):  # HumanEval: which sandbox level ran the programs
                entry["sandbox"] = task.isolation
            entry["examples"] = [{k: r[k] for k in ("index", "score", "prediction", "completion") if k in r} for r in rows[:3]]
            per_task_scores[name] = [r["score"] for r in rows]
            results[name] = entry
            if log is not None and rank == 0:
                log(f"{name}: {sum(per_task_scores[name]) / max(1, n):.4f} over {n} problems in {entry['seconds']:.1f}s")
    finally:
        model.train(was_training)
    core_names = [name for name in names if name in CHAT_TASKS]
    scores = [s for name in core_names for s in per_task_scores[name]]
    labels = [name for name in core_names for _ in per_task_scores[name]]
    metric = load_metric("chat_core").compute(predictions=scores, tasks=labels) if scores else None
    for name in names:
        if name in CHAT_TASKS:
            results[name]["accuracy"] = metric["accuracy"].get(name) if metric else None
        else:
            task_scores = per_task_scores[name]
            results[name]["accuracy"] = sum(task_scores) / len(task_scores) if task_scores else None
    return {"tasks": results, "ChatCORE": metric["chatcore"] if metric else None, "chat_core": metric}


def format_chat_table(result: dict) -> str:
    """Markdown table: task, accuracy, problems, seconds; then ChatCORE and the tasks it lacks."""
    lines = ["| Task | Accuracy | Problems | Seconds |", "|---|---|---|---|"]
    for name, entry in result["tasks"].items():
        acc = "-" if entry["accuracy"] is None else f"{entry['accuracy']:.4f}"
        extra = "".join(f", {k} {v:.4f}" for k, v in entry.items() if k.startswith("pass@") and k != "pass@1")
        lines.append(f"| {name} | {acc}{extra} | {entry['num_problems']} | {entry['seconds']:.1f} |")
    for name, entry in result["tasks"].items():
        if entry.get("sandbox"):
            lines.append(f"| {name} programs ran in the sandbox: {entry['sandbox']} | | | |")
    metric = result["chat_core"]
    if metric is not None:
        lines.append(f"| **ChatCORE** ({len(metric['accuracy'])} tasks) | **{metric['chatcore']:.4f}** | | |")
        if metric["tasks_missing"]:
            lines += ["", "ChatCORE is over the tasks run; not run: " + ", ".join(metric["tasks_missing"])]
    return "\n".join(lines)


def chatcore_from_accuracies(accuracies: dict[str, float]) -> dict:
    """The `chat_core` metric over per-task accuracies (e.g. merged from several chat_eval runs):
    each task enters as one example whose score is its accuracy, which leaves accuracies unchanged."""
    kept = {canonical_task_name(t): float(a) for t, a in accuracies.items() if canonical_task_name(t) in CHAT_TASKS}
    return load_metric("chat_core").compute(predictions=list(kept.values()), tasks=list(kept))
