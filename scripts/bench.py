"""Benchmarks: speed and memory of hf_nanogpt measured side by side with a baseline in the same run.

Every benchmark reports ratios (ours / baseline), never absolute timings as pass/fail: the machines
here are noisy, ratios from one run are comparable.

    python scripts/bench.py tokenizer   # BPE training and encoding vs rustbpe / tiktoken
    python scripts/bench.py train       # training step vs transformers' LlamaForCausalLM + AdamW
    python scripts/bench.py generate    # engine vs model.generate() vs LlamaForCausalLM
    python scripts/bench.py all         # all of the above
    python scripts/bench.py NAME --help # options of one benchmark
"""

import argparse
import importlib
import sys

BENCHMARKS = ("tokenizer", "train", "generate")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=(*BENCHMARKS, "all"))
    args, rest = parser.parse_known_args(argv)
    names = BENCHMARKS if args.benchmark == "all" else (args.benchmark,)
    for name in names:
        # each benchmark lives in hf_nanogpt/benchmarks/<name>.py and owns its own options
        module = importlib.import_module(f"hf_nanogpt.benchmarks.{name}")
        module.main(rest)


if __name__ == "__main__":
    main()
