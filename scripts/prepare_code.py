"""Turn a folder of Python source into a jsonl corpus: one document per file that parses.

    python scripts/prepare_code.py ~/src/myproject out/code.jsonl                  # files as they are
    python scripts/prepare_code.py ~/src/myproject out/code.jsonl --strip_comments # no comments, no docstrings
    python scripts/pretrain.py recipes/tiny.yaml --train_data=out/code.jsonl       # train on it

Files that do not decode or do not parse are skipped, counted and named (never fatal). Each line of
the output is `{"text": ..., "path": ...}`; the corpus loader reads the `text` field. See
`hf_nanogpt/data/code.py` for the rules.
"""

import argparse
import sys
from pathlib import Path

from hf_nanogpt.cli import run_script


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src_dir", type=Path, help="folder searched recursively for *.py files")
    parser.add_argument("out", type=Path, help="output .jsonl file (written atomically)")
    parser.add_argument("--strip_comments", action="store_true", help="remove comments and docstrings")
    parser.add_argument("--show_bad", type=int, default=20, help="name at most this many bad files (-1 = all)")
    args = parser.parse_args(argv)
    from hf_nanogpt.data.code import prepare_code

    try:
        stats = prepare_code(args.src_dir, args.out, strip_comments=args.strip_comments)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"prepare_code: {err}")
    shrink = f" ({stats.chars / max(stats.chars_before, 1):.0%} of their characters)" if args.strip_comments else ""
    print(f"wrote {stats.kept} documents, {stats.chars:,} characters{shrink}, to {args.out}")
    if stats.empty:
        print(f"left out {stats.empty} files with nothing left after stripping")
    if stats.bad:
        print(f"skipped {len(stats.bad)} files that do not decode or parse:", file=sys.stderr)
        shown = stats.bad if args.show_bad < 0 else stats.bad[: args.show_bad]
        for rel, reason in shown:
            print(f"  {rel}: {reason}", file=sys.stderr)
        if len(shown) < len(stats.bad):
            print(f"  ... and {len(stats.bad) - len(shown)} more (--show_bad -1 lists all)", file=sys.stderr)
    return stats


if __name__ == "__main__":
    run_script(main)
