"""Compression of trained tokenizers: bytes per token on held-out text of several kinds, as a table.

Texts: Python code (the stdlib corpus' validation split) and English prose (the last 10% of
tinyshakespeare, nanoGPT's validation split), plus any `--text FILE`. Columns: each `--tokenizer`,
and with `--rustbpe` a rustbpe BPE trained on the same data at the same vocabulary size (from the
folder's `tok_train.json`), the nanochat baseline. Higher bytes/token = better compression.

    python scripts/tok_eval.py --tokenizer out/tokenizer
    python scripts/tok_eval.py --tokenizer out/tok4k out/tok8k out/tokenizer --rustbpe
"""

import argparse
import json
import os
import sys
from pathlib import Path

from hf_nanogpt.cli import run_script
from hf_nanogpt.data.corpus import iter_stdlib_texts, iter_texts
from hf_nanogpt.tokenization import capped_texts, get_encoder, load_tokenizer

SHARED_DATA = Path(os.environ.get("HF_NANOGPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def eval_texts(prose: Path, extra: list[Path]) -> dict[str, list[str]]:
    """Named held-out texts; a missing prose file is skipped with a note (it lives outside the repo)."""
    texts = {"code: stdlib val": list(iter_stdlib_texts("val"))}
    if prose.is_file():
        shakespeare = prose.read_text(encoding="utf-8")
        texts[f"prose: {prose.name} val"] = [shakespeare[int(0.9 * len(shakespeare)):]]
    else:
        print(f"note: {prose} not found, prose row skipped", file=sys.stderr)
    for path in extra:
        texts[f"text: {path.name}"] = [path.read_text(encoding="utf-8")]
    return texts


def rustbpe_encoder(folder: Path):
    """A rustbpe BPE trained as `folder` was (its tok_train.json), or None with a note."""
    from hf_nanogpt.benchmarks.tokenizer import train_rustbpe

    record_path = folder / "tok_train.json"
    if not record_path.is_file():
        print(f"note: {record_path} missing, no rustbpe baseline for {folder}", file=sys.stderr)
        return None
    record = json.loads(record_path.read_text())
    corpus = iter_texts(record["data"], "train")
    _, encoding = train_rustbpe(capped_texts(corpus, record["max_chars"], record["max_doc_chars"]),
                                record["requested_vocab_size"])
    return encoding.encode_ordinary_batch


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", nargs="+", required=True, help="tokenizer folders or stage names")
    parser.add_argument("--rustbpe", action="store_true", help="add a rustbpe column per tokenizer (trains it)")
    parser.add_argument("--prose", type=Path, default=SHARED_DATA / "corpus" / "tinyshakespeare.txt")
    parser.add_argument("--text", type=Path, nargs="*", default=[], help="more UTF-8 text files, one row each")
    args = parser.parse_args(argv)

    texts = eval_texts(args.prose, args.text)
    columns = {}  # column name -> batch encoder
    for name in args.tokenizer:
        tokenizer = load_tokenizer(name)
        columns[f"{Path(name).name} ({len(tokenizer)})"] = get_encoder(tokenizer)
        if args.rustbpe and (encode := rustbpe_encoder(Path(name))) is not None:
            columns[f"rustbpe ({len(tokenizer)})"] = encode

    table: dict[str, dict[str, float]] = {}
    for kind, docs in texts.items():
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        table[kind] = {"bytes": n_bytes}
        for column, encode in columns.items():
            table[kind][column] = n_bytes / sum(len(ids) for ids in encode(docs))

    print("bytes per token (higher is better)\n")
    print("| text | bytes | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for kind, row in table.items():
        print(f"| {kind} | {row['bytes']:,} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    return table


if __name__ == "__main__":
    run_script(main)
