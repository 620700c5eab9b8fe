"""Supervised fine-tuning (full or LoRA) of a mid-trained model on a chat task mixture.

    python scripts/sft.py recipes/tiny-sft.yaml                         # starts from $HF_NANOGPT_BASE_DIR/mid
    python scripts/sft.py recipes/tiny-sft.yaml --lora_r=16             # LoRA through PEFT
    accelerate launch --config_file recipes/accelerate/ddp_8gpu.yaml scripts/sft.py recipes/d20-sft.yaml

Loss is on assistant tokens only. With --lora_r > 0 the adapters are saved to <output_dir>/adapter
(loadable with peft's AutoPeftModelForCausalLM) and the merged model to <output_dir>.
Output: --output_dir (default $HF_NANOGPT_BASE_DIR/sft).
"""

import sys

from hf_nanogpt.cli import run_script
from hf_nanogpt.recipe import parse_recipe
from hf_nanogpt.training import configure_logging, run


def main(argv: list[str] | None = None) -> dict:
    recipe = parse_recipe(sys.argv[1:] if argv is None else argv, description=__doc__,
                          defaults={"init_from": "mid"}, stage="sft")
    configure_logging()
    return run(recipe)


if __name__ == "__main__":
    run_script(main)
