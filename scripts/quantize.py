"""Save a model with int8 weights (torchao); the folder reloads quantized with from_pretrained.

    python scripts/quantize.py --model sft --output_dir out/sft-int8
    python scripts/chat_cli.py -i out/sft-int8 --compile --dtype bfloat16    # loads int8 as saved

Every nn.Linear's weight becomes int8 with one scale per output row (a tied head stays float); the
folder holds the int8 tensors, the quantization config, the remote code and the tokenizer. Needs
torchao (pip install "hf_nanogpt[quantize]"). See hf_nanogpt/inference.py.
"""

import argparse
import sys
from pathlib import Path

from hf_nanogpt.cli import run_script


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-i", required=True, help="model folder, or a stage name (base, mid, sft)")
    parser.add_argument("--output_dir", type=Path, required=True, help="folder to write the int8 model to")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of everything that stays float (activations, norms, embeddings, scales)")
    args = parser.parse_args(argv)
    import torch

    from hf_nanogpt.inference import load_for_inference, weights_bytes
    from hf_nanogpt.paths import resolve_stage

    try:
        source = resolve_stage(args.model)
        model, tokenizer = load_for_inference(source, dtype=getattr(torch, args.dtype), quantize="int8")
    except (FileNotFoundError, ImportError) as err:
        sys.exit(f"quantize: {err}")
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    before, after = weights_bytes(source), weights_bytes(args.output_dir)
    print(f"wrote {args.output_dir}: weights {after / 2**20:.1f} MiB ({after / before:.2f}x of {before / 2**20:.1f} MiB)")
    return args.output_dir


if __name__ == "__main__":
    run_script(main)
