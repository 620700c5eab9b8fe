"""Mid-train a base model on a chat task mixture (conversation format, tool use, multiple choice).

    python scripts/midtrain.py recipes/tiny-mid.yaml                    # starts from $HF_NANOGPT_BASE_DIR/base
    accelerate launch --config_file recipes/accelerate/ddp_8gpu.yaml scripts/midtrain.py recipes/d20-mid.yaml

The recipe names the mixture (`mixture:` list of {task, split, repeat/weight, stop}) and the starting
checkpoint (`init_from`, default the `base` stage). Output: --output_dir (default $HF_NANOGPT_BASE_DIR/mid).
"""

import sys

from hf_nanogpt.cli import run_script
from hf_nanogpt.recipe import parse_recipe
from hf_nanogpt.training import configure_logging, run


def main(argv: list[str] | None = None) -> dict:
    recipe = parse_recipe(sys.argv[1:] if argv is None else argv, description=__doc__,
                          defaults={"init_from": "base"}, stage="mid")
    configure_logging()
    return run(recipe)


if __name__ == "__main__":
    run_script(main)
