"""Convert a nanoGPT checkpoint into a Hugging Face model folder (and its meta.pkl into a tokenizer).

    python scripts/convert_nanogpt.py out-shakespeare-char out/shakespeare-char --meta data/shakespeare_char/meta.pkl
    python scripts/convert_nanogpt.py out/ckpt.pt out/gpt2-owt                 # BPE run: the model only
    python scripts/chat_cli.py -i out/shakespeare-char -p "ROMEO:"           # then use it like any model here

CKPT_OR_DIR is nanoGPT's `ckpt.pt` or the `out_dir` holding it (with or without bias, from a compiled
model or not, any size). The folder written loads with `AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True)` and gives nanoGPT's logits; with `--meta`, `AutoTokenizer.from_pretrained(dir)`
gives nanoGPT's character ids. `convert_nanogpt.json` in the folder records what was converted.
See `hf_nanogpt/convert_nanogpt.py` for every mapping decision.
"""

import argparse
import json
import sys
from pathlib import Path

from hf_nanogpt.cli import run_script


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="nanoGPT ckpt.pt, or the folder holding it")
    parser.add_argument("output_dir", type=Path, help="model folder to write")
    parser.add_argument("--meta", type=Path, default=None, help="nanoGPT's data/<dataset>/meta.pkl (character-level runs)")
    args = parser.parse_args(argv)
    from hf_nanogpt.convert_nanogpt import convert

    try:
        record = convert(args.checkpoint, args.output_dir, meta_path=args.meta)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"convert_nanogpt: {err}")
    print(json.dumps(record, indent=2))
    print(f"wrote {args.output_dir}")
    return record


if __name__ == "__main__":
    run_script(main)
