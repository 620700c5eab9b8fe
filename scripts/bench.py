"""Benchmarks: speed and memory of hf_nanogpt measured side by side with a baseline in the same run.

Every benchmark reports ratios (ours / baseline), never absolute timings as pass/fail: the machines
here are noisy, ratios from one run are comparable.

    python scripts/bench.py tokenizer   # BPE training and encoding vs rustbpe / tiktoken
    python scripts/bench.py data        # tokenize-and-pack throughput, cropped fraction, packer vs linear scan
    python scripts/bench.py train       # training step vs transformers' LlamaForCausalLM + AdamW
    python scripts/bench.py arch        # dense vs MoE vs Mamba-2 hybrid trained side by side (bpb, tok/s, memory)
    python scripts/bench.py quality     # shakespeare-char-cpu vs nanoGPT's CPU recipe: bpb and wall time
    python scripts/bench.py generate    # engine vs model.generate() vs LlamaForCausalLM
    python scripts/bench.py server      # /health latency idle vs while maximal requests are processed
    python scripts/bench.py all         # all of the above
    python scripts/bench.py NAME --help # options of one benchmark
"""

import argparse
import importlib
import sys

from hf_nanogpt.cli import run_script

BENCHMARKS = ("tokenizer", "data", "train", "arch", "generate", "server", "quality")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # The dispatcher's own help only before the benchmark name: `bench.py train --help` is the benchmark's.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False)
    parser.add_argument("benchmark", choices=(*BENCHMARKS, "all"))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        raise SystemExit(0 if argv else 2)
    args, rest = parser.parse_known_args(argv)
    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    for name in names:
        # each benchmark lives in hf_nanogpt/benchmarks/<name>.py and owns its own options
        module = importlib.import_module(f"hf_nanogpt.benchmarks.{name}")
        module.main(rest)


if __name__ == "__main__":
    run_script(main)
