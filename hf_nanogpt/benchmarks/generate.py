"""Generation benchmark: our `Engine` against `generate()`, side by side in one run.

Decoding speed (new tokens per second, prompt prefill included) of:

1. `Engine.generate` on a `NanoGPTForCausalLM` (KV cache, greedy);
2. `model.generate(do_sample=False)` on the *same* model, same prompt, same number of new tokens
   (the tokens are checked to be identical);
3. `model.generate(do_sample=False)` on transformers' `LlamaForCausalLM` of matched size: same
   vocabulary, width, depth, heads, context; its SwiGLU MLP gets `intermediate_size = 8/3 * width`
   so both MLPs hold the same number of weights.

and, for batched sampling, the engine's `num_samples=K` (one prefill shared by K rows) against
`generate(do_sample=True, num_return_sequences=K)` on the same model.

Ratios are engine / baseline throughput (> 1 means the engine is faster). Timings are the best of
`--repeats` runs after one warm-up. Weights are random: only speed is measured.

    python scripts/bench.py generate                                  # CPU, ~1 minute
    python scripts/bench.py generate --device cuda --depth 12 --head_dim 128 --new_tokens 256
"""

import argparse
import math
import time

import torch

from ..configuration_nanogpt import NanoGPTConfig
from ..engine import ChatTokens, Engine
from ..modeling_nanogpt import NanoGPTForCausalLM


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=4, help="model depth (NanoGPTConfig.from_depth)")
    parser.add_argument("--preset", default="nanochat_jan2026", choices=("nanochat", "nanochat_jan2026"),
                        help="model family (NanoGPTConfig.from_depth preset); the default, the January-2026 layout, "
                             "has a parameter-matched Llama; nanochat master adds value embeddings Llama lacks")
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--context", type=int, default=1024, help="max_position_embeddings")
    parser.add_argument("--prompt_tokens", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4, help="rows of the batched-sampling comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="auto: bfloat16 on cuda, float32 elsewhere")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (0: torch's default). One thread is the default: a model "
                             "this small decodes faster on one, and on a busy machine OpenMP threads waiting "
                             "for each other can slow every step tenfold")
    args = parser.parse_args(argv)
    if args.prompt_tokens + args.new_tokens > args.context:
        parser.error(f"--prompt_tokens + --new_tokens = {args.prompt_tokens + args.new_tokens} "
                     f"exceeds --context {args.context}")
    return args


def build_models(args, dtype: torch.dtype):
    """(NanoGPT, matched Llama), random weights, eval mode, on the device."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = NanoGPTConfig.from_depth(args.depth, head_dim=args.head_dim, vocab_size=args.vocab_size,
                                      max_position_embeddings=args.context, preset=args.preset)
    nano = NanoGPTForCausalLM(config)
    llama_config = LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim, max_position_embeddings=config.max_position_embeddings,
        # SwiGLU has three (d x i) matrices to ReLU^2's two (d x 4d): 3 i = 8 d keeps the weights equal
        intermediate_size=int(math.ceil(8 * config.hidden_size / 3)), tie_word_embeddings=False,
    )
    llama = LlamaForCausalLM(llama_config)
    return [m.to(device=args.device, dtype=dtype).eval() for m in (nano, llama)]


def _best_times(runs: dict, device: str, repeats: int) -> tuple[dict, dict]:
    """Best wall time of each callable over `repeats` rounds, after one warm-up round. Rounds go
    round-robin over the callables, so a load change on a shared machine hits all of them alike.
    Returns ({name: seconds}, {name: result of the last call})."""
    results = {name: fn() for name, fn in runs.items()}  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[name] = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def run(args) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else (
        torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    torch.manual_seed(args.seed)
    nano, llama = build_models(args, dtype)
    prompt = torch.randint(0, args.vocab_size, (1, args.prompt_tokens), device=args.device)
    n = args.new_tokens
    # A stop id outside the vocabulary: every row runs the full n tokens, as generate() does below.
    engine = Engine(nano, ChatTokens(assistant_end=args.vocab_size))
    ids = prompt[0].tolist()
    fixed = dict(max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0,
                 attention_mask=torch.ones_like(prompt))

    def hf_generate(model, **kwargs):
        with torch.inference_mode():
            return model.generate(prompt, **fixed, **kwargs)[:, args.prompt_tokens:].tolist()

    k = args.samples
    times, tokens = _best_times({
        "engine": lambda: engine.generate_batch(ids, temperature=0.0, max_tokens=n)[0],
        "generate": lambda: hf_generate(nano, do_sample=False),
        "llama": lambda: hf_generate(llama, do_sample=False),
        "engine_batch": lambda: engine.generate_batch(ids, num_samples=k, temperature=1.0, top_k=50,
                                                      max_tokens=n, seed=0),
        "generate_batch": lambda: hf_generate(nano, do_sample=True, top_k=50, num_return_sequences=k),
    }, args.device, args.repeats)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("nano", nano), ("llama", llama))}
    return {"times": times, "same_tokens": tokens["engine"] == tokens["generate"], "params": params,
            "config": nano.config, "dtype": str(dtype).replace("torch.", ""), "threads": threads}


def format_report(r: dict, args) -> str:
    t, n, k, cfg = r["times"], args.new_tokens, args.samples, r["config"]
    tps = lambda seconds, rows=1: rows * n / seconds  # noqa: E731
    lines = [
        f"## Generation benchmark ({args.device}, {r['dtype']}; depth {cfg.num_hidden_layers}, width "
        f"{cfg.hidden_size}, {cfg.num_attention_heads} heads, vocab {cfg.vocab_size}; NanoGPT "
        f"{r['params']['nano'] / 1e6:.2f} M params, Llama {r['params']['llama'] / 1e6:.2f} M; "
        f"prompt {args.prompt_tokens}, {n} new tokens, best of {args.repeats}, {r['threads']} CPU thread(s))",
        "",
        "| run | implementation | tokens/s | engine speed-up |",
        "|---|---|---:|---:|",
        f"| greedy, 1 row | Engine (NanoGPT) | {tps(t['engine']):.1f} | 1.00x |",
        f"| greedy, 1 row | NanoGPT `generate()` | {tps(t['generate']):.1f} | {t['generate'] / t['engine']:.2f}x |",
        f"| greedy, 1 row | Llama `generate()` (matched) | {tps(t['llama']):.1f} | {t['llama'] / t['engine']:.2f}x |",
        f"| sampling, {k} rows | Engine, shared prefill | {tps(t['engine_batch'], k):.1f} | 1.00x |",
        f"| sampling, {k} rows | NanoGPT `generate(num_return_sequences={k})` | {tps(t['generate_batch'], k):.1f} | "
        f"{t['generate_batch'] / t['engine_batch']:.2f}x |",
        "",
        f"Greedy tokens identical (Engine vs `generate()`): {'yes' if r['same_tokens'] else 'NO'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        results = run(args)
    finally:  # `--threads` is for this benchmark only (it may run inside another process, e.g. a test)
        torch.set_num_threads(threads)
    print(format_report(results, args))
    return results
