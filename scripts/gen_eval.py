"""Generate answers to prompts and score them against references: corpus BLEU and chrF (sacrebleu).

    python scripts/gen_eval.py --model sft --data my_pairs.jsonl                    # chat model, greedy
    python scripts/gen_eval.py --model base --data pairs.jsonl --prompt_format completion --max_tokens 32

The data is jsonl, one `{"prompt": "...", "reference": "..."}` per line (`reference` may be a list of
strings for several references). Writes a JSON (scores, sacrebleu signatures and every generation;
default `<model>/gen_eval.json`) and the `gen-eval` section of the report card.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from hf_nanogpt.cli import run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-i", default="sft", help="model folder, or a stage name inside the run folder")
    parser.add_argument("--data", required=True, type=Path, help="jsonl with 'prompt' and 'reference' per line")
    parser.add_argument("--prompt_format", default="chat", choices=("chat", "completion"),
                        help="chat: the prompt is a user turn; completion: plain text after <|bos|> (base models)")
    parser.add_argument("--max_tokens", type=int, default=64, help="tokens generated per prompt at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--limit", type=int, default=-1, help="score only the first N rows (-1 = all)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default: <model>/gen_eval.json)")
    parser.add_argument("--run_dir", default=None, help="report card run folder (default: $HF_NANOGPT_BASE_DIR or ./out)")
    parser.add_argument("--no_report", action="store_true", help="do not append to the report card")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from hf_nanogpt import report
    from hf_nanogpt.evaluation.generation import corpus_scores, generate_texts, load_pairs
    from hf_nanogpt.paths import base_dir, load_model_and_tokenizer, resolve_stage

    try:
        rows = load_pairs(args.data)
        model_dir = resolve_stage(args.model)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"gen_eval: {err}")
    rows = rows if args.limit < 0 else rows[: args.limit]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(model_dir, device=device)
    t0 = time.perf_counter()
    try:
        generations = generate_texts(model, tokenizer, [r["prompt"] for r in rows], args.prompt_format,
                                     max_tokens=args.max_tokens, temperature=args.temperature)
    except ValueError as err:
        sys.exit(f"gen_eval: {args.data}: {err}")
    scores = corpus_scores(generations, [r["references"] for r in rows])
    seconds = time.perf_counter() - t0
    results = {"model": str(model_dir), "data": str(args.data), "rows": len(rows), "prompt_format": args.prompt_format,
               "max_tokens": args.max_tokens, "temperature": args.temperature, **scores, "seconds": seconds,
               "samples": [{"prompt": r["prompt"], "references": r["references"], "generation": g}
                           for r, g in zip(rows, generations)]}
    print(f"BLEU {scores['BLEU']:.2f}  chrF {scores['chrF']:.2f}  ({len(rows)} rows, {seconds:.1f}s)")
    print(f"  {scores['bleu_signature']}\n  {scores['chrf_signature']}")
    out = args.output or model_dir / "gen_eval.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"wrote {out}")
    if not args.no_report:
        report.append(args.run_dir or base_dir(), "gen-eval", {
            "model": str(model_dir), "data": str(args.data), "rows": len(rows), "BLEU": scores["BLEU"],
            "chrF": scores["chrF"], "bleu_signature": scores["bleu_signature"], "wall_time_s": seconds})
    return results


if __name__ == "__main__":
    run_script(main)
