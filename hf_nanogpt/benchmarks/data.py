"""Data pipeline benchmark: tokenize-and-pack throughput on the stdlib corpus, and the packing modes
compared on the stdlib and Shakespeare corpora at T = 64 ... 2048.

    python scripts/bench.py data                       # trains a 4096-token BPE on the corpus first
    python scripts/bench.py data --tokenizer out/tokenizer --num_proc 1 2
    python scripts/bench.py data --modes_only          # just the packing-mode table (a minute)

Measured side by side in one run:
1. tokenization through `datasets.map` (cold cache, for each `--num_proc`) vs the raw batch encoder on
   the same documents (the ratio is the cost of `datasets`: Arrow writing, caching, processes);
2. the cached restart (how long `build_pretrain_loader` takes once the cache exists);
3. packing + batch assembly over one epoch of the train split (tokens/s), and the cropped fraction at
   several sequence lengths;
4. our bisect best-fit packer vs a plain linear-scan buffer (nanochat's loop shape) on the same
   documents and rule (identical rows, checked), as a ratio;
5. the packing modes (`crop`, `continue`, `stream`) over one epoch of each corpus's train documents
   (stdlib with the 4096-token BPE; tinyshakespeare from the shared data, one byte per token) at each T:
   tokens cropped, targets "aligned" (whose document starts in the same row, so the model sees it from its
   beginning), rows starting with BOS, and packing speed. This is the measurement behind the default.
"""

import argparse
import tempfile
import time
from pathlib import Path


def _linear_scan_rows(lengths: list[int], capacity: int, buffer_size: int) -> list[list[tuple[int, int]]]:
    """The best-fit rule with a list buffer scanned per placement (the baseline)."""
    source, buffer, rows = iter(enumerate(lengths)), [], []
    exhausted = False
    while True:
        row, remaining = [], capacity
        while remaining:
            while not exhausted and len(buffer) < buffer_size:
                doc = next(source, None)
                if doc is None:
                    exhausted = True
                else:
                    buffer.append(doc)
            if not buffer:
                return rows
            best = -1
            for i, (_, n) in enumerate(buffer):
                if n <= remaining and (best < 0 or n > buffer[best][1]):
                    best = i
            if best >= 0:
                key, n = buffer.pop(best)
                row.append((key, n))
                remaining -= n
            else:
                short = min(n for _, n in buffer)
                i = max(i for i, (_, n) in enumerate(buffer) if n == short)  # newest of the shortest
                key, _ = buffer.pop(i)
                row.append((key, remaining))
                remaining = 0
        rows.append(row)


def mode_stats(lengths: list[int], seq_len: int, mode: str) -> dict:
    """One epoch of `lengths` packed in `mode` at row length `seq_len`: cropped and aligned fractions,
    BOS-started rows, packing time (document keys and lengths only)."""
    from ..data.packing import make_packer

    it = iter(enumerate(lengths))
    packer = make_packer(mode, seq_len + 1, lambda: next(it, None), 1000)
    t0 = time.perf_counter()
    rows = list(packer.rows())
    seconds = time.perf_counter() - t0
    # a piece's first token is its row's boundary (no target, or the target after the previous piece);
    # its other tokens are targets aligned with their document's start when the piece starts there
    aligned = sum(p.take - 1 for row in rows for p in row if p.start == 0)
    targets = len(rows) * seq_len
    return {"cropped": packer.stats["cropped"] / max(packer.stats["doc_tokens"], 1),
            "aligned": aligned / max(targets, 1), "bos_rows": sum(row[0].start == 0 for row in rows) / max(len(rows), 1),
            "tokens_per_s": targets / max(seconds, 1e-9)}


def modes_table(corpora: dict[str, list[int]], seq_lens: list[int]) -> str:
    """Markdown: one row per corpus and T, each mode's cropped / aligned / BOS-row percentages."""
    from ..data.packing import MODES

    head = " | ".join(f"{m}: cropped, aligned, BOS rows" for m in MODES)
    lines = [f"| corpus | T | {head} |", "|---|---:|" + "---|" * len(MODES)]
    for name, lengths in corpora.items():
        for T in seq_lens:
            cells = []
            for mode in MODES:
                r = mode_stats(lengths, T, mode)
                cells.append(f"{r['cropped']:.1%}, {r['aligned']:.1%}, {r['bos_rows']:.0%}")
            lines.append(f"| {name} | {T} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shakespeare_lengths(cache) -> list[int] | None:
    from ..data.corpus import load_corpus
    from ..data.pretrain import TokenizedDocs, tokenize_corpus
    from ..paths import shared_data_dir
    from ..tokenization import train_tokenizer

    shared = shared_data_dir()
    text = shared / "corpus" / "tinyshakespeare.txt" if shared else None
    if text is None or not text.is_file():
        print("(tinyshakespeare.txt not found in the shared data: Shakespeare rows skipped)")
        return None
    byte_level = train_tokenizer(iter(["a"]), vocab_size=265)  # no merges: one byte per token
    ds = load_corpus(f"{text}[:90%]", "train", cache_dir=cache)
    return TokenizedDocs(tokenize_corpus(ds, byte_level)).lengths.tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.py data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one on the corpus)")
    parser.add_argument("--vocab_size", type=int, default=4096, help="vocabulary of the tokenizer trained here")
    parser.add_argument("--spec", default="stdlib", help="corpus spec")
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2], help="datasets.map processes to try")
    parser.add_argument("--seq_lens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--baseline_docs", type=int, default=5000, help="documents in the packer comparison")
    parser.add_argument("--mode_seq_lens", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048],
                        help="row lengths of the packing-mode table")
    parser.add_argument("--modes_only", action="store_true", help="only the packing-mode table")
    args = parser.parse_args(argv)

    import datasets

    from ..data.corpus import iter_stdlib_texts, load_corpus
    from ..data.packing import BestFitPacker
    from ..data.pretrain import TokenizedDocs, build_pretrain_loader, tokenize_corpus
    from ..tokenization import get_encoder, load_tokenizer, train_tokenizer

    datasets.disable_progress_bars()
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        t0 = time.perf_counter()
        tokenizer = train_tokenizer(iter_stdlib_texts("train"), vocab_size=args.vocab_size, max_chars=20_000_000)
        print(f"tokenizer: trained vocab {args.vocab_size} in {time.perf_counter() - t0:.1f}s")
    encoder = get_encoder(tokenizer)
    print(f"encoder backend: {getattr(encoder, 'backend', '?')}")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        if args.modes_only:
            corpora = {args.spec: TokenizedDocs(tokenize_corpus(load_corpus(args.spec, "train", cache_dir=cache / "m"),
                                                                tokenizer)).lengths.tolist()}
            if (shakespeare := _shakespeare_lengths(cache / "shakespeare")) is not None:
                corpora["shakespeare"] = shakespeare
            print("\npacking modes, one epoch of train documents:\n" + modes_table(corpora, args.mode_seq_lens))
            return
        t0 = time.perf_counter()
        ds = load_corpus(args.spec, "train", cache_dir=cache / "text")
        build = time.perf_counter() - t0
        chars = sum(len(t) for t in ds["text"])
        print(f"\ncorpus {args.spec!r} train: {len(ds)} documents, {chars / 1e6:.1f}M characters, "
              f"built in {build:.1f}s")

        texts = ds["text"]
        t0 = time.perf_counter()
        raw_tokens = sum(len(ids) + 1 for i in range(0, len(texts), 1000) for ids in encoder(texts[i:i + 1000]))
        raw = raw_tokens / (time.perf_counter() - t0)
        print(f"\n{f'tokenization ({raw_tokens / 1e6:.1f}M tokens)':<34}{'tokens/s':>12}{'vs raw':>9}")
        print(f"{'raw batch encoder':<34}{raw:>12,.0f}{1:>9.2f}")
        for n in args.num_proc:
            # a fresh copy of the text dataset per run, so every map starts with a cold cache
            cold = load_corpus(args.spec, "train", cache_dir=cache / f"text{n}")
            t0 = time.perf_counter()
            tokenized = tokenize_corpus(cold, tokenizer, num_proc=n if n > 1 else None)
            rate = raw_tokens / (time.perf_counter() - t0)
            print(f"{f'datasets.map, num_proc={n}':<34}{rate:>12,.0f}{rate / raw:>9.2f}")
        docs = TokenizedDocs(tokenized)
        assert int(docs.lengths.sum()) == raw_tokens

        t0 = time.perf_counter()
        build_pretrain_loader(args.spec, tokenizer, args.batch_size, args.seq_lens[0], cache_dir=cache / "text1")
        print(f"\ncached restart (build_pretrain_loader with the cache present): {time.perf_counter() - t0:.2f}s")

        print(f"\n{'pack + assemble, one epoch (continue)':<28}{'T':>6}{'tokens/s':>14}{'cropped':>9}")
        for T in args.seq_lens:
            loader = build_pretrain_loader(args.spec, tokenizer, args.batch_size, T, cache_dir=cache / "text1",
                                           packing="continue")
            t0, tokens = time.perf_counter(), 0
            for batch in loader:
                tokens += batch["input_ids"].numel()
                if loader.stats["epoch"] > 0:
                    break
            rate = tokens / (time.perf_counter() - t0)
            print(f"{'':<28}{T:>6}{rate:>14,.0f}{loader.stats['cropped_fraction']:>9.1%}")

        # end to end from nothing: text dataset, tokenization (one process), one epoch packed
        t0 = time.perf_counter()
        loader = build_pretrain_loader(args.spec, tokenizer, args.batch_size, args.seq_lens[0],
                                       cache_dir=cache / "e2e")
        for _ in loader:
            if loader.stats["epoch"] > 0:
                break
        rate = loader.packer.stats["doc_tokens"] / (time.perf_counter() - t0)
        print(f"\nend to end, cold cache, T={args.seq_lens[0]}: {rate:,.0f} document tokens/s "
              f"(corpus build + datasets.map + one epoch of packing)")

        lengths = docs.lengths[:args.baseline_docs].tolist()
        T = args.seq_lens[0]
        t0 = time.perf_counter()
        it = iter(enumerate(lengths))
        ours = [[(p.key, p.take) for p in row] for row in BestFitPacker(T + 1, lambda: next(it, None), 1000).rows()]
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        base = _linear_scan_rows(lengths, T + 1, 1000)
        t_base = time.perf_counter() - t0
        assert ours == base  # the same rule, the same rows
        print(f"\npacker plan, {len(lengths)} docs, T={T}, buffer 1000: bisect {t_ours * 1e3:.0f} ms, "
              f"linear scan {t_base * 1e3:.0f} ms, speedup {t_base / t_ours:.1f}x")

        corpora = {args.spec: docs.lengths.tolist()}
        if (shakespeare := _shakespeare_lengths(cache / "shakespeare")) is not None:
            corpora["shakespeare"] = shakespeare
        print("\npacking modes, one epoch of train documents:\n" + modes_table(corpora, args.mode_seq_lens))


if __name__ == "__main__":
    main()
