"""Every recipe in recipes/ loads, validates, describes a buildable model and a consistent plan;
every accelerate launch config parses; the command line overrides and rejects as documented."""

from pathlib import Path

import pytest
import torch
import yaml

from hf_nanogpt import NanoGPTForCausalLM
from hf_nanogpt.recipe import derive_plan, load_recipe_file, parse_recipe
from hf_nanogpt.training import build_model_config

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
LAUNCH_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "accelerate").glob("*.yaml"))


class _Vocab:
    """What build_model_config reads from a tokenizer (the d* recipes assume a 32768 vocabulary)."""

    bos_token_id, eos_token_id, pad_token_id = 32759, 32763, 32759

    def __len__(self):
        return 32768


def test_recipe_folder_holds_the_documented_recipes():
    names = {p.stem for p in RECIPES}
    assert {"tiny", "tiny-mid", "tiny-sft", "d12", "d20", "d26", "d32", "gpt2-124m", "shakespeare-char",
            "shakespeare-char-cpu", "shakespeare-char-cpu-nanogpt", "d20-mid", "d20-sft"} <= names
    assert {p.stem for p in LAUNCH_CONFIGS} >= {"single_gpu", "ddp_8gpu", "fsdp2_8gpu", "multinode_2x8"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_validates(path):
    recipe = parse_recipe([str(path)])
    if recipe.stage == "base":
        config = build_model_config(recipe, _Vocab())
        with torch.device("meta"):
            model = NanoGPTForCausalLM(config)
        counts = model.parameter_counts()
        world = 1 if path.stem.startswith(("tiny", "shakespeare-char")) else 8
        plan = derive_plan(recipe, model.flops_per_token(recipe.max_seq_len), counts["total"] - counts["embedding"],
                           world_size=world)
        assert plan.num_iterations > 0 and plan.grad_accum_steps >= 1
        if path.stem == "d20":  # nanochat's d20: width 1280, 10 heads, ~8.7B tokens at 20 tokens/param
            assert (config.hidden_size, config.num_attention_heads) == (1280, 10)
            assert 8e9 < plan.total_tokens < 9.5e9 and plan.grad_accum_steps == 1
        if path.stem == "gpt2-124m":
            assert config.tie_word_embeddings and config.position_embedding == "learned"
        if path.stem == "shakespeare-char-cpu-nanogpt":  # nanoGPT's CPU run: 4 x 128, 2000 steps of 12 x 64
            assert recipe.optimizer == "adamw" and recipe.packing == "stream" and plan.total_tokens == 2000 * 768
            assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 128, 4)
    else:
        assert recipe.mixture and recipe.init_from


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=lambda p: p.stem)
def test_every_launch_config_parses(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)
    data = yaml.safe_load(path.read_text())
    assert config.num_processes == data["num_processes"] and config.mixed_precision == "bf16"


def test_overrides_win_and_types_are_checked(tmp_path):
    recipe = parse_recipe(["recipes/tiny.yaml", "--depth=6", "--model_config={dropout: 0.1}", "--val_data=null"])
    assert recipe.depth == 6 and recipe.model_config == {"dropout": 0.1} and recipe.val_data is None
    with pytest.raises(SystemExit):
        parse_recipe(["recipes/tiny.yaml", "--depth=six"])
    with pytest.raises(SystemExit):
        parse_recipe(["recipes/tiny.yaml", "--no_such_key=1"])


def test_recipe_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("depth: 4\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key 'learning_rate'; valid keys: stage, "):
        load_recipe_file(bad)
    bad.write_text("depth: four\n")
    with pytest.raises(ValueError, match=r"bad.yaml: key 'depth' has value 'four' \(str\); expected int"):
        load_recipe_file(bad)
    bad.write_text("lr_schedule: linear\n")
    with pytest.raises(ValueError, match=r"expected one of 'wsd', 'cosine', 'constant'"):
        load_recipe_file(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_recipe_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe_file(tmp_path / "missing.yaml")


def test_validation_catches_impossible_values():
    with pytest.raises(ValueError, match="warmup_ratio=0.6 \\+ warmdown_ratio=0.6 exceed 1"):
        parse_recipe(["--warmup_ratio=0.6", "--warmdown_ratio=0.6"])
    with pytest.raises(ValueError, match="mixture is empty"):
        parse_recipe(["--stage=sft", "--init_from=mid"])
    with pytest.raises(ValueError, match="depth=0"):
        parse_recipe(["--depth=0"])


def test_derived_horizons_follow_the_documented_precedence():
    base = ["--device_batch_size=4", "--max_seq_len=128", "--total_batch_size=1024"]
    r = parse_recipe(base + ["--num_iterations=7", "--target_flops=1e18"])
    assert derive_plan(r, 1000, 10**6).num_iterations == 7
    r = parse_recipe(base + ["--target_flops=1e12"])
    plan = derive_plan(r, 1000, 10**6)
    assert plan.horizon_source == "target_flops" and plan.num_iterations == round(1e12 / (1000 * 1024))
    r = parse_recipe(base)
    plan = derive_plan(r, 1000, 10**6, world_size=2)
    assert plan.horizon_source == "target_param_data_ratio" and plan.num_iterations == round(20 * 10**6 / 1024)
    assert plan.grad_accum_steps == 1  # 4 x 128 x 2 processes = 1024
    with pytest.raises(ValueError, match="not a positive multiple"):
        derive_plan(parse_recipe(base), 1000, 10**6, world_size=3)
