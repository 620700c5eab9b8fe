"""Convert a nanoGPT training config (config/*.py) into a recipe YAML, without executing the file.

    python scripts/convert_nanogpt_config.py config/train_shakespeare_char.py > recipes/my-shakespeare.yaml
    python scripts/pretrain.py recipes/my-shakespeare.yaml

Top-level `name = literal` assignments are read with `ast.literal_eval`; keys the file leaves out take
nanoGPT's train.py defaults. Every recipe line says where its value came from; what could not be
mapped is listed at the end of the YAML (as comments) and on stderr. See
`hf_nanogpt/convert_nanogpt_config.py` for the mapping table.
"""

import argparse
import sys
from pathlib import Path

from hf_nanogpt.cli import run_script


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="nanoGPT config file, e.g. config/train_shakespeare_char.py")
    args = parser.parse_args(argv)
    from hf_nanogpt.convert_nanogpt_config import convert_nanogpt_config

    if not args.config.is_file():
        sys.exit(f"convert_nanogpt_config: {args.config} does not exist")
    try:
        converted = convert_nanogpt_config(args.config.read_text(encoding="utf-8"), str(args.config))
    except ValueError as err:
        sys.exit(f"convert_nanogpt_config: {err}")
    text = converted.to_yaml(str(args.config))
    sys.stdout.write(text)
    for note in converted.not_mapped:
        print(f"not mapped: {note}", file=sys.stderr)
    return text


if __name__ == "__main__":
    run_script(main)
