"""The CORE benchmark (DCLM, arXiv:2406.11794) for a base model, read from an eval bundle.

The bundle is a folder with `core.yaml` (one entry per task: label, file, task_type, num_fewshot,
continuation_delimiter, random_baseline in percent) and MosaicML eval-gauntlet jsonl files. Three
task types, each scored from one forward pass per candidate sequence:

- `multiple_choice` (`query`, `choices`, `gold`): the same context followed by each choice; the
  choice whose tokens have the lowest mean cross-entropy wins. Tokens shared by every candidate at
  the start are context, the rest is the scored continuation.
- `schema` (`context_options`, `continuation`, `gold`): each context followed by the same
  continuation; the context under which the continuation is cheapest wins. The scored part is the
  common token suffix.
- `language_modeling` (`context`, `continuation`): correct only when greedy decoding reproduces every
  token of the continuation.

Prompts follow nanochat's CORE evaluation: `num_fewshot` examples drawn deterministically for item i
with `random.Random(1234 + i)` from the rest of the task, each example rendered with its gold answer
and separated by a blank line; every sequence starts with BOS; sequences longer than the model's
context keep their last tokens. Tasks are shuffled once with `random.Random(1337)` before
`max_per_task` takes a prefix, so quick runs see a random, reproducible subset.

Sequences of several items are padded on the right and scored in one batch (causal attention means
padding never affects real positions). With several processes (`accelerate launch` or torchrun),
rank r scores items r, r + world, ... and the results are gathered on every rank. The per-item
choices are aggregated by the `core` evaluate metric shipped with the package.
"""

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from . import load_metric
from .distributed import gather_objects, rank_and_world

TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
_REQUIRED_KEYS = {
    "multiple_choice": ("query", "choices", "gold"),
    "schema": ("context_options", "continuation", "gold"),
    "language_modeling": ("context", "continuation"),
}


def default_bundle() -> Path:
    """`eval_bundle/` of the shared data folder (`hf_nanogpt.paths.shared_data_dir`); raises
    `FileNotFoundError` saying where it looked when there is none."""
    from ..paths import shared_data_dir

    root = shared_data_dir()
    if root is None or not (root / "eval_bundle" / "core.yaml").is_file():
        where = f"{root / 'eval_bundle' / 'core.yaml'} does not exist" if root else "no shared/data folder was found"
        raise FileNotFoundError(f"no CORE eval bundle ({where}): set HF_NANOGPT_SHARED_DATA to the folder holding "
                                "eval_bundle/, or pass --bundle")
    return root / "eval_bundle"


@dataclass
class CoreTask:
    """One CORE task as `core.yaml` describes it; `file` is None when the bundle lacks its data."""

    label: str
    task_type: str
    num_fewshot: int
    random_baseline: float  # percent
    continuation_delimiter: str = " "
    file: Path | None = None
    data: list[dict] = field(default_factory=list, repr=False)


def load_bundle(bundle_dir: str | Path) -> list[CoreTask]:
    """Parse and validate `<bundle_dir>/core.yaml`; errors name the entry and key at fault."""
    bundle_dir = Path(bundle_dir)
    cfg_path = bundle_dir / "core.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"CORE bundle: {cfg_path} not found (pass --bundle DIR holding core.yaml and the jsonl files)")
    cfg = yaml.safe_load(cfg_path.read_text())
    if not isinstance(cfg, dict) or not isinstance(cfg.get("tasks"), list):
        raise ValueError(f"{cfg_path}: expected a mapping with a 'tasks' list")
    tasks = []
    for i, entry in enumerate(cfg["tasks"]):
        where = f"{cfg_path}: tasks[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {entry!r}")
        for key in ("label", "task_type", "num_fewshot", "random_baseline"):
            if key not in entry:
                raise ValueError(f"{where}: missing key {key!r}")
        if entry["task_type"] not in TASK_TYPES:
            raise ValueError(f"{where} ({entry['label']}): task_type {entry['task_type']!r} is not one of {TASK_TYPES}")
        if not isinstance(entry["num_fewshot"], int) or entry["num_fewshot"] < 0:
            raise ValueError(f"{where} ({entry['label']}): num_fewshot must be an int >= 0, got {entry['num_fewshot']!r}")
        if not 0 <= float(entry["random_baseline"]) < 100:
            raise ValueError(f"{where} ({entry['label']}): random_baseline is a percentage in [0, 100), got {entry['random_baseline']!r}")
        file = entry.get("file")
        tasks.append(CoreTask(
            label=str(entry["label"]), task_type=entry["task_type"], num_fewshot=entry["num_fewshot"],
            random_baseline=float(entry["random_baseline"]),
            continuation_delimiter=str(entry.get("continuation_delimiter", " ")),
            file=None if file is None else bundle_dir / file,
        ))
    labels = [t.label for t in tasks]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{cfg_path}: duplicate task labels in {labels}")
    return tasks


def load_task_data(task: CoreTask) -> list[dict]:
    """Read and validate the task's jsonl (errors give file, line and the missing or bad key)."""
    if task.file is None:
        raise ValueError(f"CORE task {task.label!r} has no data file in this bundle")
    from ..tasks.base import iter_jsonl

    rows = []
    for lineno, row in iter_jsonl(task.file):
        where = f"{task.file}, line {lineno}"
        for key in _REQUIRED_KEYS[task.task_type]:
            if not isinstance(row, dict) or key not in row:
                raise ValueError(f"{where}: {task.task_type} row lacks key {key!r} "
                                 f"(has {sorted(row) if isinstance(row, dict) else type(row).__name__})")
        options = row.get("choices", row.get("context_options"))
        if options is not None and not (isinstance(row["gold"], int) and 0 <= row["gold"] < len(options)):
            raise ValueError(f"{where}: gold={row['gold']!r} is not an index into {len(options)} options")
        rows.append(row)
    if not rows:
        raise ValueError(f"{task.file}: no rows")
    return rows


# ---------------------------------------------------------------------------------------------- prompts
def fewshot_indices(n: int, idx: int, k: int) -> list[int]:
    """k distinct indices of [0, n) other than idx, fixed by `random.Random(1234 + idx)`."""
    k = min(k, n - 1)
    picks = random.Random(1234 + idx).sample(range(n - 1), k)
    return [j + 1 if j >= idx else j for j in picks]  # skip idx itself


def render_prompts(task: CoreTask, item: dict, shots: Sequence[dict]) -> list[str]:
    """The candidate texts of one item: one per choice / context option; for language modelling
    `[context only, context + continuation]`."""
    d = task.continuation_delimiter
    if task.task_type == "multiple_choice":
        prefix = "".join(f"{s['query']}{d}{s['choices'][s['gold']]}\n\n" for s in shots)
        return [f"{prefix}{item['query']}{d}{c}" for c in item["choices"]]
    if task.task_type == "schema":
        prefix = "".join(f"{s['context_options'][s['gold']]}{d}{s['continuation']}\n\n" for s in shots)
        return [f"{prefix}{c}{d}{item['continuation']}" for c in item["context_options"]]
    prefix = "".join(f"{s['context'].strip()}{d}{s['continuation']}\n\n" for s in shots)
    with_cont = f"{prefix}{item['context'].strip()}{d}{item['continuation']}"
    # Strip the context-only prompt: a trailing space would merge into the continuation's first
    # token in `with_cont`, and the context would no longer be a token prefix of it.
    return [f"{prefix}{item['context'].strip()}{d}".strip(), with_cont]


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def _common_suffix(seqs: Sequence[Sequence[int]]) -> int:
    return _common_prefix([s[::-1] for s in seqs])


def score_spans(task_type: str, token_lists: list[list[int]]) -> list[tuple[list[int], int, int]]:
    """`(ids, start, end)` per sequence to score: targets ids[start:end] (BOS already included)."""
    if task_type == "multiple_choice":
        p = _common_prefix(token_lists)
        return [(ids, min(p, len(ids) - 1), len(ids)) for ids in token_lists]
    if task_type == "schema":
        s = _common_suffix(token_lists)
        return [(ids, max(1, len(ids) - s), len(ids)) for ids in token_lists]
    without, with_cont = token_lists
    return [(with_cont, min(_common_prefix([without, with_cont]), len(with_cont) - 1), len(with_cont))]


def crop_left(ids: list[int], start: int, end: int, max_len: int | None) -> tuple[list[int], int, int]:
    """Keep the last `max_len` tokens (the continuation is at the end) and shift the span."""
    if max_len is None or len(ids) <= max_len:
        return ids, start, end
    cut = len(ids) - max_len
    return ids[cut:], max(1, start - cut), end - cut


# ---------------------------------------------------------------------------------------------- scoring
def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if callable(tokenizer) and hasattr(tokenizer, "pad_token_id"):  # a transformers tokenizer
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [tokenizer.encode(t) for t in texts]


def bos_id(tokenizer) -> int:
    """The tokenizer's BOS id (`bos_token_id`, else `<|bos|>`, else `<|endoftext|>`)."""
    bid = getattr(tokenizer, "bos_token_id", None)
    for name in ("<|bos|>", "<|endoftext|>"):
        if bid is None and hasattr(tokenizer, "convert_tokens_to_ids"):
            cand = tokenizer.convert_tokens_to_ids(name)
            bid = cand if isinstance(cand, int) and cand != getattr(tokenizer, "unk_token_id", None) else None
    if bid is None:
        raise ValueError("CORE needs a BOS token: the tokenizer has no bos_token_id, <|bos|> or <|endoftext|>")
    return bid


@torch.no_grad()
def score_sequences(model, seqs: list[tuple[list[int], int, int]], pad_id: int) -> list[tuple[float, bool]]:
    """For each `(ids, start, end)`: mean cross-entropy of ids[start:end] and whether greedy decoding
    reproduces them. One right-padded forward pass for the whole list."""
    device = next(model.parameters()).device
    T = max(len(ids) for ids, _, _ in seqs)
    x = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for b, (ids, _, _) in enumerate(seqs):
        x[b, : len(ids)] = torch.tensor(ids)
    logits = model(input_ids=x.to(device)).logits  # (B, T, V)
    # Gather only the predicting positions (t - 1 for target t) before the softmax: (N, V) not (B, T, V).
    rows = torch.cat([torch.full((e - s,), b) for b, (_, s, e) in enumerate(seqs)])
    cols = torch.cat([torch.arange(s - 1, e - 1) for _, s, e in seqs])
    targets = x[rows, cols + 1].to(device)
    sel = logits[rows.to(device), cols.to(device)].float()  # (N, V)
    nll = F.cross_entropy(sel, targets, reduction="none")
    hit = sel.argmax(-1) == targets
    out, i = [], 0
    for _, s, e in seqs:
        n = e - s
        out.append((nll[i:i + n].mean().item(), bool(hit[i:i + n].all())))
        i += n
    return out


def evaluate_task(model, tokenizer, task: CoreTask, items: Sequence[int], max_len: int | None = None,
                  batch_tokens: int = 16384) -> list[tuple[int, int]]:
    """`(predicted option, gold option)` for the given item indices of `task.data`.

    Items are packed into batches of at most `batch_tokens` padded tokens (always at least one item).
    For language modelling the single option is chosen (0) only on a greedy exact match, else -1.
    """
    bos = bos_id(tokenizer)
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else bos
    data, results, pending = task.data, [], []

    def flush():
        flat = [seq for _, seqs in pending for seq in seqs]
        scores = score_sequences(model, flat, pad)
        k = 0
        for i, seqs in pending:
            item_scores = scores[k:k + len(seqs)]
            k += len(seqs)
            if task.task_type == "language_modeling":
                results.append((0 if item_scores[0][1] else -1, 0))
            else:
                losses = [loss for loss, _ in item_scores]
                results.append((min(range(len(losses)), key=losses.__getitem__), data[i]["gold"]))
        pending.clear()

    for i in items:
        shots = [data[j] for j in fewshot_indices(len(data), i, task.num_fewshot)]
        token_lists = [[bos] + ids for ids in _encode(tokenizer, render_prompts(task, data[i], shots))]
        seqs = [crop_left(*span, max_len) for span in score_spans(task.task_type, token_lists)]
        width = max(len(ids) for ids, _, _ in seqs + [s for _, ss in pending for s in ss])
        if pending and width * (sum(len(ss) for _, ss in pending) + len(seqs)) > batch_tokens:
            flush()
        pending.append((i, seqs))
    if pending:
        flush()
    return results


def model_context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def evaluate_core(model, tokenizer, bundle_dir: str | Path | None = None, max_per_task: int = -1,
                  tasks: Sequence[str] | None = None, batch_tokens: int = 16384,
                  log: Callable[[str], None] | None = None) -> dict:
    """Run CORE on `model` and return the `core` metric's result plus bookkeeping.

    Keys: `core` (mean centered accuracy over the tasks evaluated), `accuracy`, `centered`,
    `num_examples` (per task), `tasks_missing` (every CORE task not evaluated) with
    `missing_reasons` (absent from the bundle, file not found, or not selected), `seconds` (per task
    wall time) and `bundle`. `tasks` restricts the run to those labels; `max_per_task` > 0 caps the
    items per task. Every rank must call this; all get the same result.
    """
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else default_bundle()
    all_tasks = load_bundle(bundle_dir)
    known = {t.label for t in all_tasks}
    unknown = [t for t in tasks or [] if t not in known]
    if unknown:
        raise ValueError(f"CORE: unknown task(s) {unknown}; the bundle has {sorted(known)}")
    rank, world = rank_and_world()
    max_len = model_context_length(model)
    missing_reasons, seconds, local = {}, {}, []
    was_training = model.training
    model.eval()
    for task in all_tasks:
        if task.file is None:
            missing_reasons[task.label] = "not in the bundle (core.yaml has file: null)"
            continue
        if tasks is not None and task.label not in tasks:
            missing_reasons[task.label] = "not selected"
            continue
        if not task.file.is_file():
            missing_reasons[task.label] = f"data file {task.file} not found"
            continue
        t0 = time.perf_counter()
        task.data = load_task_data(task)
        order = list(range(len(task.data)))
        random.Random(1337).shuffle(order)
        if max_per_task > 0:
            order = order[:max_per_task]
        for pred, gold in evaluate_task(model, tokenizer, task, order[rank::world], max_len, batch_tokens):
            local.append((task.label, pred, gold))
        seconds[task.label] = time.perf_counter() - t0
        task.data = []
        if log is not None and rank == 0:
            log(f"CORE {task.label}: {len(order)} items in {seconds[task.label]:.1f}s")
    model.train(was_training)
    rows = [r for part in gather_objects(local) for r in part]
    metric = load_metric("core")
    result = metric.compute(
        predictions=[p for _, p, _ in rows], references=[g for _, _, g in rows], tasks=[t for t, _, _ in rows],
        random_baselines={t.label: t.random_baseline for t in all_tasks},
        expected_tasks=[t.label for t in all_tasks],
    ) if rows else {"core": None, "accuracy": {}, "centered": {}, "num_examples": {},
                    "tasks_missing": [t.label for t in all_tasks]}
    result["missing_reasons"] = {t: missing_reasons.get(t, "no items") for t in result["tasks_missing"]}
    result["seconds"] = seconds
    result["bundle"] = str(bundle_dir)
    if result["core"] is not None and not math.isfinite(result["core"]):
        raise RuntimeError(f"CORE came out non-finite: {result}")
    return result
