"""Evaluate a chat model (after mid-training or SFT): ARC-Easy, ARC-Challenge, MMLU (answer-letter
logits), GSM8K, HumanEval, SpellingBee (generation; calculator tool on; HumanEval runs in a sandbox),
and ChatCORE over the tasks run. Prints a table, writes JSON, appends to the report card.

    python scripts/chat_eval.py -i sft                                  # every task, greedy
    python scripts/chat_eval.py -i mid -a ARC-Easy,MMLU --max_problems 200
    python scripts/chat_eval.py -i out/sft -a HumanEval --num_samples 10 --temperature 0.8 --pass_k 1,5,10
    python scripts/chat_eval.py -i sft -a GSM8K --source GSM8K=/data/gsm8k_test.jsonl
    accelerate launch --num_processes 8 scripts/chat_eval.py -i sft     # problems split over ranks

Data: a local file when one is found in ../shared/data (eval bundle ARC, chat_eval/ MMLU, GSM8K,
HumanEval), else the hub dataset; `--hub` forces the hub, `--source TASK=PATH` names a file.
SpellingBee is synthetic (built-in corpus, test words).
"""

import argparse
import json
import time
from pathlib import Path

from hf_nanogpt.cli import run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--model", default="sft", help="model folder, or a stage name (mid, sft) in the run folder")
    parser.add_argument("-a", "--tasks", default=None,
                        help="comma-separated tasks (default: ARC-Easy,ARC-Challenge,MMLU,GSM8K,HumanEval,SpellingBee)")
    parser.add_argument("--max_problems", type=int, default=None, help="first N problems of each task (default: all)")
    parser.add_argument("--batch_size", type=int, default=8, help="questions per forward pass (categorical tasks)")
    parser.add_argument("--num_samples", type=int, default=1, help="replies per problem (generative tasks)")
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pass_k", default="1", help="comma-separated k for pass@k (each <= num_samples)")
    parser.add_argument("--source", action="append", default=[], metavar="TASK=PATH", help="local data file for a task")
    parser.add_argument("--hub", action="store_true", help="read every task from its hub dataset")
    parser.add_argument("--spelling_size", type=int, default=256, help="SpellingBee / Arithmetic test problems to generate")
    parser.add_argument("--workers", type=int, default=2, help="HumanEval programs run at once")
    parser.add_argument("--output", default=None, help="JSON results path (default: <model>/chat_eval.json)")
    parser.add_argument("--run_dir", default=None, help="report card run folder (default: $HF_NANOGPT_BASE_DIR or ./out)")
    parser.add_argument("--report_section", default=None, help="report section (default: chat-eval-<stage or folder name>)")
    parser.add_argument("--no_report", action="store_true", help="do not append to the report card")
    parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="model dtype (default: bfloat16 on GPU, float32 on CPU)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from hf_nanogpt.paths import resolve_model_folder

    resolve_model_folder(args.model)  # a missing or non-model folder fails before torch is imported
    import torch
    from accelerate import PartialState

    from hf_nanogpt import report
    from hf_nanogpt.evaluation.chat import (CHAT_TASKS, EXTRA_TASKS, canonical_task_name, chatcore_from_accuracies,
                                             evaluate_chat, format_chat_table, resolve_source)
    from hf_nanogpt.paths import base_dir, hub_offline, load_model_and_tokenizer, resolve_stage

    sources = {}
    for item in args.source:
        task, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--source {item!r}: expected TASK=PATH")
        sources[task] = path
    if args.hub:
        sources = {t: "hub" for t in CHAT_TASKS} | sources
    tasks = args.tasks.split(",") if args.tasks else list(CHAT_TASKS)
    skipped = {}
    if hub_offline():  # a task without local data cannot run offline: skip it and say so
        for task in list(tasks):
            if resolve_source(task, sources.get(task, "auto")) == "hub":
                skipped[canonical_task_name(task)] = ("no local data file (set HF_NANOGPT_SHARED_DATA or "
                                                      f"--source {canonical_task_name(task)}=PATH) and the hub is offline")
                tasks.remove(task)
        for task, why in skipped.items():
            print(f"skipped {task}: {why}")
        if not tasks:
            raise SystemExit("chat_eval: no task can run offline; every requested task was skipped")
    ks = [int(k) for k in args.pass_k.split(",")]
    if max(ks) > args.num_samples:
        raise SystemExit(f"--pass_k {args.pass_k}: every k must be <= --num_samples ({args.num_samples})")

    state = PartialState()
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if state.device.type == "cuda" else torch.float32)
    model_dir = resolve_stage(args.model)
    model, tokenizer = load_model_and_tokenizer(model_dir, device=state.device, dtype=dtype)
    log = print if state.is_main_process else (lambda *_: None)

    t0 = time.perf_counter()
    result = evaluate_chat(model, tokenizer, tasks, max_problems=args.max_problems, batch_size=args.batch_size,
                           num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, seed=args.seed, ks=ks, sources=sources,
                           spelling_size=args.spelling_size, num_workers=args.workers, log=log)
    result["seconds"] = time.perf_counter() - t0
    result["skipped"] = skipped
    result["model"] = str(model_dir)
    log(format_chat_table(result))
    log(f"chat eval took {result['seconds']:.1f}s")
    if not state.is_main_process:
        return
    out = Path(args.output) if args.output else model_dir / "chat_eval.json"
    out.write_text(json.dumps(result, indent=2))
    log(f"wrote {out}")
    if args.no_report:
        return
    run_dir = args.run_dir or base_dir()
    section = args.report_section or f"chat-eval-{args.model if args.model in ('base', 'mid', 'sft') else model_dir.name}"
    previous = dict(report.read_sections(run_dir)).get(section, {})
    accuracies = {t: previous[t] for t in CHAT_TASKS + EXTRA_TASKS if isinstance(previous.get(t), (int, float))}
    accuracies |= {t: e["accuracy"] for t, e in result["tasks"].items() if e["accuracy"] is not None}
    merged = chatcore_from_accuracies(accuracies)  # ChatCORE over every task this section has seen
    data = dict(accuracies, ChatCORE=merged["chatcore"], ChatCORE_tasks_missing=merged["tasks_missing"],
                wall_time_s=previous.get("wall_time_s", 0.0) + result["seconds"], max_problems=args.max_problems)
    for t, e in result["tasks"].items():
        data.update({f"{t} {k}": v for k, v in e.items() if k.startswith("pass@") and k != "pass@1"})
    report.append(run_dir, section, data)


if __name__ == "__main__":
    run_script(main)
