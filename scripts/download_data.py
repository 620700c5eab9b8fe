"""Download the first N parquet shards of a Hugging Face Hub dataset (the pretraining corpus).

    python scripts/download_data.py -n 8 --repo karpathy/fineweb-edu-100b-shuffle --output_dir ~/data/fineweb
    python scripts/download_data.py -n 2 --repo HuggingFaceFW/fineweb-edu --subdir sample/10BT --output_dir data/fw
    python scripts/download_data.py -n -1 --repo /mnt/mirror/fineweb --output_dir data/fw   # a local mirror

Shards are taken in sorted path order and keep their relative paths; finished shards are skipped on a
rerun. A recipe then names the corpus, nanochat-style with the last shard held out for validation:
    train_data: ~/data/fineweb/**/*.parquet[:-1]
    val_data:   ~/data/fineweb/**/*.parquet[-1:]
"""

import argparse
import logging

from hf_nanogpt.cli import run_script
from hf_nanogpt.data.download import download_shards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num_shards", type=int, required=True, help="number of shards to fetch (-1: all)")
    parser.add_argument("--repo", required=True, help="hub dataset id OWNER/NAME, or a local directory (a mirror)")
    parser.add_argument("--output_dir", required=True, help="where the shards go")
    parser.add_argument("--subdir", default=None, help="only shards under this folder of the repository")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the repository")
    parser.add_argument("--workers", type=int, default=4, help="parallel downloads")
    parser.add_argument("--retries", type=int, default=3, help="retries per shard, with exponential backoff")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = download_shards(args.repo, args.num_shards, args.output_dir, subdir=args.subdir, revision=args.revision,
                            workers=args.workers, retries=args.retries)
    print(f"{len(paths)} shard(s) in {args.output_dir}: {paths[0].name} ... {paths[-1].name}")


if __name__ == "__main__":
    run_script(main)
