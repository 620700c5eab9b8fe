"""Convert a nanochat checkpoint (weights, config, tokenizer) into a Hugging Face model folder.

    python scripts/convert_nanochat.py ~/.cache/nanochat/base_checkpoints/d20 out/nanochat-d20
    python scripts/convert_nanochat.py ~/.cache/nanochat/chatsft_checkpoints/d20 out/d20-sft --step 700
    python scripts/convert_nanochat.py CKPT_DIR --output_dir OUT --tokenizer ~/.cache/nanochat/tokenizer

CHECKPOINT_DIR holds nanochat's `model_<step>.pt` and `meta_<step>.json` (the newest step unless --step).
The tokenizer (`tokenizer.pkl`, `token_bytes.pt`) is found in CHECKPOINT_DIR/tokenizer or in nanochat's
base dir two levels up (`$NANOCHAT_BASE_DIR/tokenizer`), or given with --tokenizer. Weights are read with
`torch.load(weights_only=True)`, the tokenizer pickle through an allow-list unpickler; a weight or config
field the converter does not know is refused by name. The output folder loads without this package:

    AutoModelForCausalLM.from_pretrained("out/nanochat-d20", trust_remote_code=True)
    AutoTokenizer.from_pretrained("out/nanochat-d20")
"""

import argparse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", help="nanochat checkpoint folder (model_<step>.pt + meta_<step>.json)")
    parser.add_argument("output", nargs="?", default=None, help="model folder to write (or --output_dir)")
    parser.add_argument("--output_dir", default=None, help="model folder to write (same as the positional OUTPUT)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step to convert (default: the newest)")
    parser.add_argument("--tokenizer", default=None, help="nanochat tokenizer folder with tokenizer.pkl "
                                                          "(default: found next to the checkpoint)")
    args = parser.parse_args(argv)
    if (args.output is None) == (args.output_dir is None):
        parser.error("give the output folder once: as OUTPUT or as --output_dir")
    args.output_dir = args.output_dir or args.output
    return args


def main(argv=None):
    args = parse_args(argv)
    from hf_nanogpt.convert_nanochat import convert_nanochat, find_step

    step = find_step(args.checkpoint_dir, args.step)
    out = convert_nanochat(args.checkpoint_dir, args.output_dir, step=step, tokenizer_dir=args.tokenizer)
    print(f"converted {args.checkpoint_dir} step {step} -> {out}")
    print(f"load it with: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    return out


if __name__ == "__main__":
    main()
