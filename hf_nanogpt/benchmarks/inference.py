"""Inference optimisations side by side (part of `bench.py generate`): int8 weights, compiled decoding,
bfloat16, against the same model in eager float32, in one run.

For each variant: greedy decoding speed through the engine (new tokens per second *after* the first,
so the prefill is not counted; best of `--repeats` after a warm-up call, which also pays the
compilation), its ratio to eager float32, the size of the saved weights as a ratio, the greedy tokens
compared with eager float32, and the quality cost: validation bits per byte minus float32's (with
`--model` only: a random model has no tokenizer and no meaningful loss). Compilation uses inductor,
as `--compile` does in the chat scripts; it takes minutes on a small CPU.

    python scripts/bench.py generate --model out/base                    # a trained model: quality too
    python scripts/bench.py generate --variants int8,compile+int8        # a subset
"""

import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("int8", "compile", "compile+int8", "bf16+compile", "bf16+compile+int8")


def parse_variant(name: str) -> dict:
    parts = set(name.split("+"))
    if not parts <= {"int8", "compile", "bf16"}:
        raise ValueError(f"variant {name!r}: combine int8, compile and bf16 with '+' (e.g. bf16+compile+int8)")
    return {"dtype": torch.bfloat16 if "bf16" in parts else torch.float32,
            "quantize": "int8" if "int8" in parts else "none", "compile": "compile" in parts}


def decode_rate(engine, prompt: list[int], new_tokens: int) -> tuple[float, list[int]]:
    """(new tokens per second after the first one, the tokens) of one greedy generation."""
    tokens, start = [], None
    for column, _ in engine.generate(prompt, max_tokens=new_tokens, temperature=0.0):
        tokens.append(column[0])
        if start is None:  # the prefill and the first token are done
            start = time.perf_counter()
    return (len(tokens) - 1) / max(time.perf_counter() - start, 1e-9), tokens


def run_variants(folder, variants, prompt: list[int], new_tokens: int, repeats: int, tokenizer=None,
                 bpb_data: str = "stdlib", bpb_steps: int = 4, device: str = "cpu") -> list[dict]:
    """Measure eager float32 and each variant on the model saved in `folder` (see the module docstring)."""
    from ..engine import ChatTokens, Engine
    from ..inference import enable_compiled_decoding, load_model, weights_bytes

    stop = ChatTokens(assistant_end=-1)  # never stops: every run decodes exactly new_tokens
    specs = [("eager float32", {"dtype": torch.float32, "quantize": "none", "compile": False})]
    specs += [(v, parse_variant(v)) for v in variants]
    engines, sizes, losses = {}, {}, {}
    batches = _val_batches(folder, tokenizer, bpb_data, bpb_steps) if tokenizer is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in specs:
            model = load_model(folder, device=device, dtype=spec["dtype"], quantize=spec["quantize"])
            key = (spec["dtype"], spec["quantize"])
            if key not in sizes:  # weights as saved: int8 tensors + scales, the rest in the dtype
                model.save_pretrained(Path(tmp) / name.replace(" ", "_").replace("+", "_"))
                sizes[key] = weights_bytes(Path(tmp) / name.replace(" ", "_").replace("+", "_"))
                if batches is not None:  # the same validation batches for every variant
                    from ..evaluation.bpb import evaluate_bpb
                    from ..tokenization import token_bytes

                    losses[key] = evaluate_bpb(model, batches, token_bytes(tokenizer))
            if spec["compile"]:
                enable_compiled_decoding(model)
            engines[name] = (Engine(model, stop, compile=spec["compile"]), key)
    rows = []
    for name, (engine, key) in engines.items():  # warm-up: the first call compiles
        t0 = time.perf_counter()
        _, tokens = decode_rate(engine, prompt, new_tokens)
        rows.append({"variant": name, "tokens_per_s": 0.0, "warmup_s": time.perf_counter() - t0, "tokens": tokens,
                     "key": key, "weights_bytes": sizes[key], "val_bpb": losses.get(key)})
    for _ in range(repeats):  # round-robin, so a change of load on a shared machine hits every variant alike
        for row, (engine, _) in zip(rows, engines.values()):
            row["tokens_per_s"] = max(row["tokens_per_s"], decode_rate(engine, prompt, new_tokens)[0])
    base = rows[0]
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["size_ratio"] = r["weights_bytes"] / base["weights_bytes"]
        r["bpb_delta"] = None if r["val_bpb"] is None else r["val_bpb"] - base["val_bpb"]
        same = next((i for i, (a, b) in enumerate(zip(r["tokens"], base["tokens"])) if a != b), None)
        r["same_tokens"] = "yes" if same is None else f"no (from token {same})"
    return rows


def _val_batches(folder, tokenizer, data: str, steps: int) -> list[dict]:
    """The first `steps` validation batches (4 x up to 256 tokens) of `data`."""
    from transformers import AutoConfig

    from ..data.pretrain import build_pretrain_loader

    seq_len = min(256, AutoConfig.from_pretrained(folder).max_position_embeddings)
    loader = iter(build_pretrain_loader(data, tokenizer, 4, seq_len, split="val"))
    return [next(loader) for _ in range(steps)]


def format_rows(rows: list[dict], new_tokens: int, threads: int, model_name: str) -> str:
    lines = [f"## Inference optimisations ({model_name}; greedy, {new_tokens} new tokens, decode speed after the "
             f"first token, {threads} CPU thread(s))", "",
             "| variant | decode tokens/s | vs eager float32 | weights size | val bpb (delta) | greedy tokens as float32 "
             "| warm-up (compile) |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        bpb = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.4f} ({r['bpb_delta']:+.4f})"
        lines.append(f"| {r['variant']} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | {r['size_ratio']:.2f}x "
                     f"| {bpb} | {r['same_tokens']} | {r['warmup_s']:.1f} s |")
    if rows[0]["val_bpb"] is None:
        lines += ["", "Quality cost: pass --model with a trained model folder (random weights have no meaningful loss)."]
    return "\n".join(lines)


__all__ = ["VARIANTS", "decode_rate", "format_rows", "parse_variant", "run_variants"]
