"""Train the byte-level BPE tokenizer and save it as a Hugging Face tokenizer folder.

The folder (tokenizer.json, tokenizer_config.json, chat_template.jinja) loads with
`AutoTokenizer.from_pretrained(DIR)`; `tok_train.json` next to it records how it was trained.

    python scripts/tok_train.py                                         # stdlib, vocab 32768 -> out/tokenizer
    python scripts/tok_train.py --output_dir out/tokenizer --vocab_size 4096 --max_chars 20000000 --data stdlib
    python scripts/tok_train.py --data ../shared/data/corpus/tinyshakespeare.txt --vocab_size 2048
    python scripts/tok_train.py --data 'shards/*.parquet[:-1]' --max_chars 2000000000   # nanochat scale
"""

import argparse
import json
import sys
import time
from pathlib import Path

from hf_nanogpt.cli import run_script
from hf_nanogpt.data.corpus import iter_texts
from hf_nanogpt.paths import base_dir
from hf_nanogpt.tokenization import capped_texts, train_tokenizer


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=None, help="where to save (default: $HF_NANOGPT_BASE_DIR/tokenizer)")
    parser.add_argument("--vocab_size", type=int, default=32768, help="total vocabulary incl. 9 control tokens (nanochat: 32768)")
    parser.add_argument("--max_chars", type=int, default=2_000_000_000, help="training characters at most (nanochat: 2e9)")
    parser.add_argument("--max_doc_chars", type=int, default=10_000, help="each document is cut to this many characters")
    parser.add_argument("--data", default="stdlib", help="corpus spec: 'stdlib', a .txt/.jsonl/.parquet path, glob or "
                        "directory, or hf:OWNER/NAME (see hf_nanogpt/data/corpus.py); its train split is used")
    args = parser.parse_args(argv)
    output_dir = args.output_dir or base_dir() / "tokenizer"

    chars = 0

    def counted():
        nonlocal chars
        for text in capped_texts(iter_texts(args.data, "train"), args.max_chars, args.max_doc_chars):
            chars += len(text)
            yield text

    start = time.perf_counter()
    # the caps are applied above, while counting
    tokenizer = train_tokenizer(counted(), vocab_size=args.vocab_size, max_chars=None, max_doc_chars=None)
    seconds = time.perf_counter() - start
    tokenizer.save_pretrained(output_dir)
    record = {"data": args.data, "vocab_size": len(tokenizer), "requested_vocab_size": args.vocab_size,
              "max_chars": args.max_chars, "max_doc_chars": args.max_doc_chars, "train_chars": chars,
              "train_seconds": round(seconds, 2)}
    (output_dir / "tok_train.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"trained on {chars:,} chars of {args.data} in {seconds:.1f}s ({chars / seconds / 1e6:.2f} M chars/s); "
          f"vocab {len(tokenizer)} (asked {args.vocab_size}) -> {output_dir}")
    if len(tokenizer) < args.vocab_size:
        print(f"note: the corpus supports only {len(tokenizer)} tokens; more text gives the full vocabulary",
              file=sys.stderr)
    return output_dir


if __name__ == "__main__":
    run_script(main)
