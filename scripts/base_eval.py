"""Evaluate a base model: CORE (DCLM) from the eval bundle, bits per byte on validation data, and
greedy samples from a few fixed prompts. Prints a table, writes JSON, appends to the report card.

    python scripts/base_eval.py --model base --max_per_task 100           # quick, CPU
    python scripts/base_eval.py --model out/base --bundle ../shared/data/eval_bundle --output core.json
    python scripts/base_eval.py --model base --tasks copa,arc_easy --bpb_steps 0 --no_samples
    accelerate launch --num_processes 8 scripts/base_eval.py --model base   # items split over ranks

CORE is reported over the tasks the bundle holds; the tasks it lacks (hellaswag, squad, coqa in
`../shared/data/eval_bundle`) are named in the output, never dropped silently.
"""

import argparse
import json
import time
from pathlib import Path

from hf_nanogpt.cli import run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-i", default="base", help="model folder, or a stage name inside the run folder")
    parser.add_argument("--bundle", default=None, help="eval bundle folder with core.yaml (default: ../shared/data/eval_bundle)")
    parser.add_argument("--max_per_task", type=int, default=-1, help="items per CORE task (-1 = all)")
    parser.add_argument("--tasks", default=None, help="comma-separated CORE task labels (default: every task in the bundle)")
    parser.add_argument("--batch_tokens", type=int, default=16384, help="padded tokens per scoring forward pass")
    parser.add_argument("--bpb_data", default="stdlib", help="corpus spec for validation bits per byte (see hf_nanogpt.data)")
    parser.add_argument("--bpb_steps", type=int, default=8, help="validation batches for bits per byte (0 = skip)")
    parser.add_argument("--bpb_batch_size", type=int, default=8)
    parser.add_argument("--no_samples", action="store_true", help="skip the fixed-prompt samples")
    parser.add_argument("--output", default=None, help="JSON results path (default: <model>/base_eval.json)")
    parser.add_argument("--run_dir", default=None, help="report card run folder (default: $HF_NANOGPT_BASE_DIR or ./out)")
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
    from hf_nanogpt.evaluation.base import format_core_table, sample_base
    from hf_nanogpt.evaluation.core import default_bundle, evaluate_core
    from hf_nanogpt.paths import base_dir, load_model_and_tokenizer, resolve_stage

    state = PartialState()  # joins the process group under accelerate launch / torchrun
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if state.device.type == "cuda" else torch.float32)
    model_dir = resolve_stage(args.model)
    model, tokenizer = load_model_and_tokenizer(model_dir, device=state.device, dtype=dtype)
    log = print if state.is_main_process else (lambda *_: None)
    results = {"model": str(model_dir), "num_processes": state.num_processes}

    t0 = time.perf_counter()
    tasks = args.tasks.split(",") if args.tasks else None
    bundle, core = args.bundle, None
    if bundle is None:  # no bundle named: use the shared one, or say why CORE is skipped
        try:
            bundle = default_bundle()
        except FileNotFoundError as err:
            results["core_skipped"] = str(err)
            log(f"CORE skipped: {err}")
    if bundle is not None:
        core = evaluate_core(model, tokenizer, bundle, max_per_task=args.max_per_task, tasks=tasks,
                             batch_tokens=args.batch_tokens, log=log)
        results["core"] = core
        log(format_core_table(core))
    results["core_seconds"] = time.perf_counter() - t0
    log(f"CORE took {results['core_seconds']:.1f}s")

    if args.bpb_steps > 0:
        from hf_nanogpt.data.pretrain import build_pretrain_loader
        from hf_nanogpt.evaluation.bpb import evaluate_bpb
        from hf_nanogpt.tokenization import token_bytes

        t0 = time.perf_counter()
        seq_len = model.config.max_position_embeddings
        loader = build_pretrain_loader(args.bpb_data, tokenizer, args.bpb_batch_size, seq_len, split="val",
                                       rank=state.process_index, world_size=state.num_processes)
        results["val_bpb"] = evaluate_bpb(model, loader, token_bytes(tokenizer), steps=args.bpb_steps)
        results["bpb_seconds"] = time.perf_counter() - t0
        log(f"val bits per byte ({args.bpb_data}, {args.bpb_steps} x {args.bpb_batch_size} x {seq_len} tokens): "
            f"{results['val_bpb']:.4f} in {results['bpb_seconds']:.1f}s")

    if state.is_main_process and not args.no_samples:
        results["samples"] = sample_base(model, tokenizer)
        for s in results["samples"]:
            log(f"{s['prompt']!r} -> {s['completion']!r}")

    if state.is_main_process:
        out = Path(args.output) if args.output else model_dir / "base_eval.json"
        out.write_text(json.dumps(results, indent=2))
        log(f"wrote {out}")
        if not args.no_report:
            section = {"wall_time_s": results["core_seconds"] + results.get("bpb_seconds", 0.0)}
            if core is not None:
                section.update({"CORE": core["core"], "core_tasks": len(core["accuracy"]),
                                "max_per_task": args.max_per_task, "tasks_missing": core["tasks_missing"],
                                "centered": core["centered"]})
            else:
                section["core_skipped"] = results["core_skipped"]
            if "val_bpb" in results:
                section["val_bpb"] = results["val_bpb"]
            report.append(args.run_dir or base_dir(), "base-eval", section)


if __name__ == "__main__":
    run_script(main)
