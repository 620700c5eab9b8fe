"""The report card: every stage appends its numbers; one command turns them into `report.md` + plots.

    python -m hf_nanogpt.report                   # run folder $HF_NANOGPT_BASE_DIR (default ./out)
    python -m hf_nanogpt.report --run_dir out/    # or an explicit one
    python -m hf_nanogpt.report --reset           # start a new card (keeps the run's models)

Stages write small JSON files under `<run_dir>/report/`, one per section, through `append()`; a
section appended twice merges its keys (the latest value wins), so re-running a stage is harmless.
Sections this module knows by name (others are listed after them, in the order written):

| section            | written by        | keys the summary table reads                                 |
|--------------------|-------------------|--------------------------------------------------------------|
| `tokenizer`        | tok_train / eval  | -                                                            |
| `base-train`       | pretrain          | `wall_time_s`                                                |
| `base-eval`        | base_eval         | `CORE` (BASE column), `wall_time_s`                          |
| `mid-train`        | midtrain          | `wall_time_s`                                                |
| `chat-eval-mid`    | chat_eval -i mid  | `ARC-Easy`, `ARC-Challenge`, `MMLU`, `GSM8K`, `HumanEval`, `SpellingBee`, `ChatCORE` |
| `sft-train`        | sft               | `wall_time_s`                                                |
| `chat-eval-sft`    | chat_eval -i sft  | as `chat-eval-mid` (SFT column)                              |
| `gen-eval`         | gen_eval          | - (`BLEU`, `chrF` listed in the section)                     |

A section's duration is its `wall_time_s` (or `train_time_s`, as the training loop writes it).
Training stages also write `<run_dir>/<stage>/train_log.jsonl` (one JSON object per line: `step`,
`loss`, `lr` (or `lr_mult`), `grad_norm`, `tokens_per_s`, `mfu`; validation rows carry `val_bpb` and
`val_ppl`); the card plots those as PNGs (matplotlib, Agg backend) under `<run_dir>/report/` and lists
the last validation row of each stage, with base_eval's, in a bits-per-byte / perplexity table.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .stages import STAGES

REPORT_DIR = "report"
SECTION_ORDER = ("header", "environment", "tokenizer", "tokenizer-eval", STAGES["base"].train_section, "base-eval",
                 STAGES["mid"].train_section, "chat-eval-mid", STAGES["sft"].train_section, "chat-eval-sft",
                 "gen-eval")
SUMMARY_METRICS = ("CORE", "ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "SpellingBee", "Arithmetic",
                   "ChatCORE")
# Card columns, one per stage (stages.py), and the evaluation sections each column reads.
STAGE_COLUMNS = {info.title: ((f"{name}-eval", f"chat-eval-{name}") if name == "base" else (f"chat-eval-{name}",))
                 for name, info in STAGES.items()}
TRAIN_STAGES = tuple(info.folder for info in STAGES.values())
# Plotted quantities: file stem -> (title, keys accepted in train_log.jsonl, first found wins).
PLOTTED = {"loss": ("train loss", ("loss",)), "val_bpb": ("validation bits per byte", ("val_bpb",)),
           "val_ppl": ("validation perplexity (per token: depends on the tokenizer)", ("val_ppl",)),
           "lr": ("learning rate (multiplier of each group's base rate when logged as lr_mult)", ("lr", "lr_mult")),
           "tokens_per_s": ("throughput (tokens/s)", ("tokens_per_s",)), "mfu": ("MFU", ("mfu",)),
           "grad_norm": ("gradient norm", ("grad_norm",))}
WALL_TIME_KEYS = ("wall_time_s", "train_time_s")  # a section's duration, first found wins


def _report_dir(run_dir) -> Path:
    return Path(run_dir) / REPORT_DIR


def _slug(section: str) -> str:
    if not section or not all(c.isalnum() or c in "-_" for c in section):
        raise ValueError(f"report section {section!r}: use letters, digits, '-' and '_' only")
    return section


def _jsonable(value):
    """Make `value` JSON-safe: tensors / numpy scalars to numbers, paths to strings, NaN kept as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def append(run_dir, section: str, data: dict) -> Path:
    """Merge `data` into the report section `section` of the run at `run_dir`; returns the JSON path.

    Written atomically (temp file + rename), so a crash never leaves half a section behind.
    """
    if not isinstance(data, dict):
        raise TypeError(f"report.append: data must be a dict, got {type(data).__name__}")
    path = _report_dir(run_dir) / f"{_slug(section)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {"section": section, "created": time.time(), "data": {}}
    old["data"].update(_jsonable(data))
    old["updated"] = time.time()
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(old, indent=2))
    os.replace(tmp, path)
    return path


@contextmanager
def timed(run_dir, section: str):
    """`with timed(run_dir, "base-eval") as data: data["CORE"] = ...` appends `data` plus `wall_time_s`
    when the block ends (also when it raises, with `failed` set)."""
    data, start = {}, time.perf_counter()
    try:
        yield data
    except BaseException:
        data["failed"] = True
        raise
    finally:
        data["wall_time_s"] = time.perf_counter() - start
        append(run_dir, section, data)


def read_sections(run_dir) -> list[tuple[str, dict]]:
    """`(section, data)` pairs in card order: known sections first, then others by creation time."""
    folder = _report_dir(run_dir)
    if not folder.is_dir():
        return []
    entries = []
    for path in folder.glob("*.json"):
        try:
            entries.append(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"report section file {path} is not valid JSON: {e}") from None
    rank = {name: i for i, name in enumerate(SECTION_ORDER)}
    entries.sort(key=lambda e: (rank.get(e["section"], len(rank)), e.get("created", 0)))
    return [(e["section"], e["data"]) for e in entries]


def reset(run_dir) -> None:
    """Start a new card: drop the old sections and plots, record the start time and the environment."""
    folder = _report_dir(run_dir)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.suffix in (".json", ".png"):
                path.unlink()
    append(run_dir, "header", {"started": datetime.now().isoformat(timespec="seconds")})
    append(run_dir, "environment", environment())


# ------------------------------------------------------------------------------------------ environment
def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Git commit, library versions, CPU / GPU / memory of this machine, and the size of the code."""
    import importlib.metadata as md

    env = {"git_commit": _git("rev-parse", "HEAD"), "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD")}
    status = _git("status", "--porcelain", "--untracked-files=no")
    env["git_dirty"] = None if status is None else bool(status)
    env["python"] = sys.version.split()[0]
    for lib in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "evaluate", "peft"):
        try:
            env[lib] = md.version(lib)
        except md.PackageNotFoundError:
            env[lib] = None
    env["platform"] = platform.platform()
    env["cpu"] = _cpu_model()
    env["cpu_count"] = os.cpu_count()
    try:
        env["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        env["memory_gb"] = None
    try:
        import torch

        if torch.cuda.is_available():
            env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            env["cuda"] = torch.version.cuda
        else:
            env["gpus"] = []
    except ImportError:
        env["gpus"] = None
    pkg = Path(__file__).resolve().parent
    files = [p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts]
    env["code_files"] = len(files)
    env["code_lines"] = sum(len(p.read_text(encoding="utf-8", errors="replace").splitlines()) for p in files)
    return env


# ------------------------------------------------------------------------------------------ training logs
def read_train_log(path) -> list[dict]:
    """Rows of a `train_log.jsonl`; a torn last line (a run killed mid-write) is skipped, any other
    bad line raises `ValueError` with the file and line number."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):
                break
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with a 'step' key, got {line[:80]!r}")
        rows.append(row)
    return rows


def plot_training(run_dir, out_dir=None) -> list[Path]:
    """One PNG per logged quantity (loss, val_bpb, val_ppl, lr, tokens_per_s, mfu, grad_norm) with a line per
    training stage; quantities nobody logged are skipped. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else _report_dir(run_dir)
    logs = {s: read_train_log(run_dir / s / "train_log.jsonl") for s in TRAIN_STAGES
            if (run_dir / s / "train_log.jsonl").is_file()}
    written = []
    for stem, (title, keys) in PLOTTED.items():
        series = {}
        for stage, rows in logs.items():
            for key in keys:
                pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
                if pts:
                    series[stage] = pts
                    break
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for stage, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=stage, marker="o" if len(pts) < 20 else None)
        ax.set(title=title, xlabel="step (within stage)", ylabel=stem)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------ markdown
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, list) and len(value) > 8:
        return ", ".join(map(str, value[:8])) + f", ... ({len(value)} items)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    return str(value)


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# Keys under which a section lists what an aggregate left out (a partial CORE / ChatCORE gets a note).
_MISSING_KEYS = {"CORE": "tasks_missing", "ChatCORE": "ChatCORE_tasks_missing"}


def _merge(sections: list[tuple[str, dict]]) -> dict[str, dict]:
    """Sections by name; a section appended several times is merged, later keys winning."""
    merged: dict[str, dict] = {}
    for name, data in sections:
        merged.setdefault(name, {}).update(data)
    return merged


def summary_table(sections: list[tuple[str, dict]]) -> str:
    """nanochat's table: one row per metric, BASE / MID / SFT columns, '-' where not measured. An
    aggregate computed over part of its tasks is starred, with a note naming what it lacks."""
    merged = _merge(sections)
    rows = ["| Metric | " + " | ".join(STAGE_COLUMNS) + " |", "|---|" + "---|" * len(STAGE_COLUMNS)]
    notes = []
    for metric in SUMMARY_METRICS:
        cells = []
        for column, column_sections in STAGE_COLUMNS.items():
            found = [s for s in column_sections if s in merged and isinstance(merged[s].get(metric), (int, float))]
            if not found:
                cells.append("-")
                continue
            missing = merged[found[0]].get(_MISSING_KEYS.get(metric, ""), [])
            cells.append(f"{merged[found[0]][metric]:.4f}" + ("*" if missing else ""))
            if missing:
                notes.append(f"\\* {column} {metric} is over the tasks evaluated; missing: {', '.join(missing)}.")
        if any(c != "-" for c in cells):
            rows.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(rows + ([""] + notes if notes else []))


# Chance accuracy of each chat task (4-way multiple choice: 1/4; generated answers: 0).
CHANCE = {"ARC-Easy": 0.25, "ARC-Challenge": 0.25, "MMLU": 0.25, "GSM8K": 0.0, "HumanEval": 0.0,
          "SpellingBee": 0.0, "Arithmetic": 0.0}


def learned_summary(sections: list[tuple[str, dict]]) -> list[str]:
    """Lines saying how far above chance the final chat model is on each task it was evaluated on."""
    merged = _merge(sections)
    final = next((merged[s] for s in ("chat-eval-sft", "chat-eval-mid") if s in merged), None)
    if final is None:
        return []
    rows = [(t, final[t], c) for t, c in CHANCE.items() if isinstance(final.get(t), (int, float))]
    if not rows:
        return []
    n = final.get("max_problems")
    lines = ["## What the chat model learned", "",
             f"Accuracy of the final chat model against chance ({f'up to {n} problems per task' if n else 'all problems'};"
             " '-- learned' marks 25 points or more above chance):", ""]
    lines += [f"- {t}: {acc:.1%} (chance {c:.0%}){' -- learned' if acc >= c + 0.25 else ''}" for t, acc, c in rows]
    return lines + [""]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validation_table(run_dir, sections: list[tuple[str, dict]]) -> list[str]:
    """Bits per byte next to perplexity: the last validation row of each stage's `train_log.jsonl`, then
    base_eval's numbers. Empty when nothing was validated."""
    rows = []
    for info in STAGES.values():
        path = Path(run_dir) / info.folder / "train_log.jsonl"
        vals = [r for r in read_train_log(path) if _number(r.get("val_bpb"))] if path.is_file() else []
        if vals:
            rows.append((f"{info.train_section} (step {vals[-1]['step']})", vals[-1]["val_bpb"], vals[-1].get("val_ppl")))
    base_eval = _merge(sections).get("base-eval", {})
    if _number(base_eval.get("val_bpb")):
        rows.append(("base-eval", base_eval["val_bpb"], base_eval.get("val_ppl")))
    if not rows:
        return []
    lines = ["## Validation loss", "", "| measured at | bits per byte | perplexity |", "|---|---:|---:|"]
    lines += [f"| {name} | {bpb:.4f} | {f'{ppl:.2f}' if _number(ppl) else '-'} |" for name, bpb, ppl in rows]
    return lines + ["", "Perplexity is exp(mean nats per token) over the same targets as bits per byte; it is per "
                    "token, so it is comparable only between models with the same tokenizer (bits per byte is "
                    "comparable across tokenizers).", ""]


def write_report(run_dir=None) -> Path:
    """Write `<run_dir>/report.md` (and the plots) from the appended sections; returns its path."""
    from .paths import base_dir

    run_dir = Path(run_dir) if run_dir is not None else base_dir()
    sections = read_sections(run_dir)
    if not sections and not any((run_dir / s / "train_log.jsonl").is_file() for s in TRAIN_STAGES):
        raise FileNotFoundError(f"no report sections under {_report_dir(run_dir)} and no train_log.jsonl in "
                                f"{run_dir}/{{{','.join(TRAIN_STAGES)}}}: nothing to report (wrong --run_dir?)")
    names = [n for n, _ in sections]
    if "environment" not in names:  # `reset` was never called: describe the machine writing the card
        sections.insert(0, ("environment", environment()))
    lines = ["# hf_nanogpt report card", "", f"Generated {datetime.now().isoformat(timespec='seconds')} from `{run_dir}`.", ""]
    env = dict(sections[[n for n, _ in sections].index("environment")][1])
    lines += ["## Environment", ""] + [f"- {k}: {_fmt(v)}" for k, v in env.items()] + [""]
    lines += ["## Summary", "", summary_table(sections), ""]
    lines += learned_summary(sections)
    lines += validation_table(run_dir, sections)
    timings = [(n, next(d[k] for k in WALL_TIME_KEYS if isinstance(d.get(k), (int, float))))
               for n, d in sections if any(isinstance(d.get(k), (int, float)) for k in WALL_TIME_KEYS)]
    if timings:
        lines += ["## Wall time", "", "| stage | wall time |", "|---|---|"]
        lines += [f"| {n} | {_duration(t)} |" for n, t in timings]
        lines += [f"| **sum of stages** | **{_duration(sum(t for _, t in timings))}** |", ""]
    started = dict(sections).get("header", {}).get("started")
    if started:
        last = max(json.loads(p.read_text()).get("updated", 0) for p in _report_dir(run_dir).glob("*.json"))
        elapsed = last - datetime.fromisoformat(started).timestamp()
        lines += [f"Wall clock from `--reset` ({started}) to the last appended section: {_duration(max(0.0, elapsed))}.", ""]
    plots = plot_training(run_dir)
    if plots:
        lines += ["## Training curves", ""] + [f"![{p.stem}]({p.relative_to(run_dir).as_posix()})" for p in plots] + [""]
    for name, data in sections:
        if name in ("environment",):
            continue
        lines += [f"## {name}", ""] + [f"- {k}: {_fmt(v)}" for k, v in _flatten(data)] + [""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hf_nanogpt.report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", default=None, help="run folder (default $HF_NANOGPT_BASE_DIR or ./out)")
    parser.add_argument("--reset", action="store_true", help="clear the card and record the environment, then exit")
    args = parser.parse_args(argv)
    from .paths import base_dir

    run_dir = Path(args.run_dir) if args.run_dir else base_dir()
    if args.reset:
        reset(run_dir)
        print(f"report card reset in {_report_dir(run_dir)}")
        return
    print(f"wrote {write_report(run_dir)}")


if __name__ == "__main__":
    main()
