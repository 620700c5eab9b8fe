"""Pretrain a NanoGPT base model from a recipe (the main job).

    # 8 GPUs, nanochat's d20 speedrun model (see recipes/accelerate/ for other launch configs)
    accelerate launch --config_file recipes/accelerate/ddp_8gpu.yaml scripts/pretrain.py recipes/d20.yaml
    # one CPU process, the embedded default
    python scripts/pretrain.py recipes/tiny.yaml
    # two CPU processes (torchrun + gloo on a machine without GPUs), overrides after the recipe
    accelerate launch --multi_gpu --num_processes 2 scripts/pretrain.py recipes/tiny.yaml --num_iterations=20
    # the resolved recipe and derived plan (batch, steps, transferred lrs and weight decay) as JSON, no data read
    WORLD_SIZE=8 python scripts/pretrain.py recipes/d20.yaml --plan_only=true

Every key of the recipe can be overridden as --key=value (see --help). The model, optimizer and loader
state are checkpointed under --output_dir (default $HF_NANOGPT_BASE_DIR/base); the final folder loads
with AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True).
"""

import json
import sys

from hf_nanogpt.cli import run_script
from hf_nanogpt.planning import plan_only
from hf_nanogpt.recipe import parse_recipe
from hf_nanogpt.training import configure_logging, run


def main(argv: list[str] | None = None) -> dict:
    recipe = parse_recipe(sys.argv[1:] if argv is None else argv, description=__doc__,
                          stage="base")
    if recipe.plan_only:
        resolved = plan_only(recipe)
        print(json.dumps(resolved, indent=2, default=str))
        return resolved
    configure_logging()
    return run(recipe)


if __name__ == "__main__":
    run_script(main)
