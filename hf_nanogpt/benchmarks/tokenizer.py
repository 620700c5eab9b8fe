"""Tokenizer benchmark: our `tokenizers` BPE against nanochat's stack, side by side in one run.

- Training throughput (MB of UTF-8 text per second): `train_tokenizer` (Hugging Face `tokenizers`)
  vs `rustbpe` (nanochat's trainer) on the same documents, same split pattern, same vocabulary size.
- Batch-encode throughput on held-out text: our Hugging Face path (`get_encoder(tok, "hf")`) vs a
  `tiktoken.Encoding` built from *our* merges (`get_encoder(tok, "tiktoken")`, checked to give the same
  ids) and, for reference, `rustbpe`'s own batch encoder and tiktoken on rustbpe's merges (nanochat).
- Compression (bytes per token) of both trained vocabularies, to show the trainers agree.

Ratios are ours / baseline (> 1 means ours is faster). Timings are the best of `--repeats` runs.

    python scripts/bench.py tokenizer                                # stdlib, 10 M chars, vocab 8192
    python scripts/bench.py tokenizer --max_chars 50000000 --vocab_size 32768
"""

import argparse
import time
from collections.abc import Callable, Iterable

from ..data.corpus import iter_stdlib_texts
from ..tokenization import SPECIAL_TOKENS, SPLIT_PATTERN, capped_texts, get_encoder, train_tokenizer


def train_rustbpe(texts: Iterable[str], vocab_size: int):
    """nanochat's baseline: `rustbpe` BPE (same split pattern) with `vocab_size - 9` merges-plus-bytes
    (the control tokens are not part of BPE training), returned with a tiktoken `Encoding` of its merges."""
    import rustbpe
    import tiktoken

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(iter(texts), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = dict(trainer.get_mergeable_ranks())
    encoding = tiktoken.Encoding(name="rustbpe", pat_str=trainer.get_pattern(), mergeable_ranks=ranks, special_tokens={})
    return trainer, encoding


def _best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def run(vocab_size: int, max_chars: int, repeats: int) -> dict:
    """Measure everything; returns a dict of rows `name -> (seconds, MB, extra)` and notes."""
    train_texts = list(capped_texts(iter_stdlib_texts("train"), max_chars, 10_000))
    train_mb = sum(len(t.encode("utf-8")) for t in train_texts) / 1e6
    eval_texts = list(iter_stdlib_texts("val"))
    eval_mb = sum(len(t.encode("utf-8")) for t in eval_texts) / 1e6

    # training: one run each (several seconds, and a second run would just repeat it)
    t_ours, tok = _best_time(lambda: train_tokenizer(train_texts, vocab_size=vocab_size), 1)
    t_rust, (rust, rust_tiktoken) = _best_time(lambda: train_rustbpe(train_texts, vocab_size), 1)

    hf, ours_tiktoken = get_encoder(tok, "hf"), get_encoder(tok, "tiktoken")
    t_hf, ids_hf = _best_time(lambda: hf(eval_texts), repeats)
    t_tt, ids_tt = _best_time(lambda: ours_tiktoken(eval_texts), repeats)
    t_rb, ids_rb = _best_time(lambda: rust.batch_encode(eval_texts), repeats)
    t_rt, _ = _best_time(lambda: rust_tiktoken.encode_ordinary_batch(eval_texts), repeats)
    n_ours, n_rust = sum(map(len, ids_hf)), sum(map(len, ids_rb))
    return {
        "train_mb": train_mb, "eval_mb": eval_mb, "vocab": (len(tok), rust.vocab_size + len(SPECIAL_TOKENS)),
        "train": {"ours (tokenizers)": t_ours, "rustbpe": t_rust},
        "encode": {"ours, hf path": t_hf, "ours, tiktoken path": t_tt, "rustbpe batch_encode": t_rb,
                   "tiktoken, rustbpe merges": t_rt},
        "same_ids": ids_hf == ids_tt,
        "bytes_per_token": {"ours": eval_mb * 1e6 / n_ours, "rustbpe": eval_mb * 1e6 / n_rust},
        "auto": get_encoder(tok).backend,
    }


def format_report(r: dict) -> str:
    """The results as markdown tables with ratios (ours / baseline throughput)."""
    lines = [f"## Tokenizer benchmark (train {r['train_mb']:.1f} MB of stdlib, encode {r['eval_mb']:.1f} MB "
             f"held out; vocab ours {r['vocab'][0]}, rustbpe {r['vocab'][1]})", "",
             "| task | implementation | seconds | MB/s | ratio vs baseline |", "|---|---|---:|---:|---:|"]
    train, encode = r["train"], r["encode"]
    base = train["rustbpe"]
    for name, sec in train.items():
        lines.append(f"| train | {name} | {sec:.2f} | {r['train_mb'] / sec:.2f} | {base / sec:.2f}x |")
    base = encode["ours, tiktoken path"]
    for name, sec in encode.items():
        lines.append(f"| encode | {name} | {sec:.3f} | {r['eval_mb'] / sec:.2f} | {base / sec:.2f}x |")
    hf_vs_tt = encode["ours, hf path"] / encode["ours, tiktoken path"]
    lines += ["", "Baselines: training vs rustbpe; encoding vs tiktoken on our merges (ratio > 1: faster than it).",
              f"Bytes per token on the held-out text: ours {r['bytes_per_token']['ours']:.3f}, "
              f"rustbpe {r['bytes_per_token']['rustbpe']:.3f}.",
              f"HF encode path is {hf_vs_tt:.1f}x slower than tiktoken on the same merges; "
              f"same ids: {'yes' if r['same_ids'] else 'NO'}.",
              f"get_encoder(tokenizer, 'auto') uses the {r['auto']} path."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py tokenizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab_size", type=int, default=8192, help="vocabulary size of both tokenizers")
    parser.add_argument("--max_chars", type=int, default=10_000_000, help="training characters (stdlib train split)")
    parser.add_argument("--repeats", type=int, default=3, help="encode runs per implementation; the best counts")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be at least 1")
    result = run(args.vocab_size, args.max_chars, args.repeats)
    print(format_report(result))
    return result
