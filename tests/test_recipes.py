"""Every recipe in recipes/ loads, validates, describes a buildable model and a consistent plan;
every accelerate launch config parses; the command line overrides and rejects as documented."""

import runpy
from pathlib import Path

import pytest
import torch
import yaml

from hf_nanogpt import NanoGPTForCausalLM
from hf_nanogpt.planning import plan_for_model, plan_only, scaling_parameters
from hf_nanogpt.planning import derive_plan
from hf_nanogpt.recipe import load_recipe_file, parse_recipe
from hf_nanogpt.training import build_model_config

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
LAUNCH_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "accelerate").glob("*.yaml"))


class _Vocab:
    """What build_model_config reads from a tokenizer (the d* recipes assume a 32768 vocabulary)."""

    bos_token_id, eos_token_id, pad_token_id = 32759, 32763, 32759

    def __len__(self):
        return 32768


def test_recipe_folder_holds_the_documented_recipes():
    names = {p.stem for p in RECIPES}
    assert {"tiny", "tiny-mid", "tiny-sft", "d12", "d20", "d24", "d26", "d32", "gpt2-124m", "shakespeare-char",
            "shakespeare-char-cpu", "shakespeare-char-cpu-nanogpt", "d20-mid", "d20-sft", "tiny-moe", "tiny-hybrid",
            "d20-moe"} <= names
    assert {p.stem for p in LAUNCH_CONFIGS} >= {"single_gpu", "ddp_8gpu", "fsdp2_8gpu", "multinode_2x8"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_validates(path):
    recipe = parse_recipe([str(path)])
    if recipe.stage == "base":
        config = build_model_config(recipe, _Vocab())
        with torch.device("meta"):
            model = NanoGPTForCausalLM(config)
        world = 1 if path.stem.startswith(("tiny", "shakespeare-char")) else 8
        plan = plan_for_model(recipe, model, world_size=world)
        assert plan.num_iterations > 0 and plan.grad_accum_steps >= 1
        if path.stem == "d20":  # nanochat's d20: width 1280, 10 heads
            assert (config.hidden_size, config.num_attention_heads) == (1280, 10)
        if path.stem == "gpt2-124m":
            assert config.tie_word_embeddings and config.position_embedding == "learned"
        if path.stem in ("tiny-moe", "d20-moe"):  # iso active MLP width: (k + shared) x expert width ~ 4d
            active = (config.num_experts_per_tok + config.num_shared_experts) * config.moe_intermediate_size
            assert config.mlp_layer_types == ["moe"] * config.num_hidden_layers
            assert abs(active - 4 * config.hidden_size) / (4 * config.hidden_size) < 0.03
        if path.stem == "d20-moe":  # nanochat moe3: 8 experts, top-2 + 1 shared, sigmoid router, bias balancing
            assert (config.num_experts, config.moe_intermediate_size % 128, config.moe_balancing) == (8, 0, "bias")
        if path.stem == "tiny-hybrid":  # attention every 4th layer
            assert config.layer_types == ["linear_attention"] * 3 + ["full_attention"]
        if path.stem == "shakespeare-char-cpu-nanogpt":  # nanoGPT's CPU run: 4 x 128, 2000 steps of 12 x 64
            assert recipe.optimizer == "adamw" and recipe.packing == "stream" and plan.total_tokens == 2000 * 768
            assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 128, 4)
    else:
        assert recipe.mixture and recipe.init_from


# nanochat master's resolved values (scripts/base_train.py): tokens per step, steps, Muon lr, Muon weight decay
NANOCHAT_PLANS = {"d12": (524_288, 2_520, 0.02, 0.28), "d20": (1_048_576, 4_980, 0.0283, 0.100),
                  "d24": (1_048_576, 5_568, 0.0283, 0.0597)}


@pytest.mark.parametrize("name", sorted(NANOCHAT_PLANS))
def test_ladder_plans_equal_nanochat_masters(name, monkeypatch, tmp_path):
    """`--plan_only` of the d* recipes, without a tokenizer or any data, resolves nanochat master's values."""
    monkeypatch.setenv("WORLD_SIZE", "8")
    main = runpy.run_path(str(RECIPES_DIR.parent / "scripts" / "pretrain.py"))["main"]  # in-process
    out = main([str(RECIPES_DIR / f"{name}.yaml"), "--plan_only=true", f"--tokenizer={tmp_path / 'none'}",
                f"--train_data={tmp_path / 'no_data'}/*.parquet"])
    batch, steps, muon_lr, wd = NANOCHAT_PLANS[name]
    plan = out["plan"]
    assert (plan["total_batch_size"], plan["num_iterations"]) == (batch, steps)
    assert plan["batch_size_source"] == "power_lines"
    assert plan["lrs"]["matrix_lr"] == pytest.approx(muon_lr, abs=5e-5)
    assert plan["weight_decay"] == pytest.approx(wd, abs=5e-4)
    assert (plan["warmup_steps"], plan["warmdown_steps"], plan["final_lr_frac"]) == (40, round(0.65 * steps), 0.05)
    assert out["vocab_size"] == 32768 and out["recipe"]["muon_variant"] == "nanochat"
    assert not (tmp_path / "none").exists()  # no tokenizer was trained, nothing was read


def test_scaling_parameters_are_block_matrices_and_head():
    recipe = parse_recipe([str(RECIPES_DIR / "d20.yaml")])
    with torch.device("meta"):
        model = NanoGPTForCausalLM(build_model_config(recipe, _Vocab()))
    # 20 x 12 x 1280^2 (q, k, v, o + 4x MLP up/down) + the 32768 x 1280 head + the value-embedding gates
    # inside the blocks (10 layers x 12 x 10 = 1,200 parameters, counted as nanochat counts transformer.h)
    assert scaling_parameters(model) == 20 * 12 * 1280**2 + 32768 * 1280 + 10 * 12 * 10
    assert scaling_parameters(model) == model.parameter_counts()["scaling"]


def test_transfer_and_plan_only_refuse_what_they_cannot_resolve(tmp_path):
    with pytest.raises(ValueError, match="hyperparameter_transfer=nanochat applies to pretraining"):
        parse_recipe([str(RECIPES_DIR / "d20-sft.yaml"), "--hyperparameter_transfer=nanochat"])
    with pytest.raises(ValueError, match="needs target_param_data_ratio > 0"):
        parse_recipe([str(RECIPES_DIR / "d20.yaml"), "--target_param_data_ratio=-1"])
    with pytest.raises(FileNotFoundError, match="sets no vocab_size"):
        plan_only(parse_recipe([str(RECIPES_DIR / "d20.yaml"), "--vocab_size=-1", f"--tokenizer={tmp_path}/x"]))


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
    bad.write_text("warmup_ratio: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown key 'warmup_ratio' \(replaced by warmup_steps"):
        load_recipe_file(bad)
    bad.write_text("lr_schedule: linear\n")
    with pytest.raises(ValueError, match=r"expected one of 'wsd', 'cosine', 'step', 'constant'"):
        load_recipe_file(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_recipe_file(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe_file(tmp_path / "missing.yaml")


def test_validation_catches_impossible_values():
    with pytest.raises(SystemExit):  # renamed keys are refused with the new name (argparse prints it)
        parse_recipe(["--warmup_ratio=0.1"])
    with pytest.raises(ValueError, match="step_milestones=\\[0.8, 0.5\\] is invalid: expected increasing"):
        parse_recipe(["--lr_schedule=step", "--step_milestones=[0.8, 0.5]", "--step_factors=[0.5, 0.1]"])
    with pytest.raises(ValueError, match="expected two lists of numbers of the same length"):
        parse_recipe(["--lr_schedule=step", "--step_milestones=[0.5]", "--step_factors=[0.5, 0.1]"])
    with pytest.raises(ValueError, match="they only apply to lr_schedule=step"):
        parse_recipe(["--step_milestones=[0.5]", "--step_factors=[0.5]"])
    with pytest.raises(ValueError, match="lookahead_alpha=0 is invalid"):
        parse_recipe(["--lookahead_k=5", "--lookahead_alpha=0"])
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
    assert plan.horizon_source == "target_param_data_ratio" and plan.num_iterations == 12 * 10**6 // 1024
    assert plan.grad_accum_steps == 1  # 4 x 128 x 2 processes = 1024
    with pytest.raises(ValueError, match="not a positive multiple"):
        derive_plan(parse_recipe(base), 1000, 10**6, world_size=3)


def test_a_chat_stage_inherits_the_base_runs_learning_rates(tmp_path):
    from hf_nanogpt.recipe import inherit_learning_rates, save_recipe

    base = parse_recipe([str(RECIPES_DIR / "d20.yaml"), "--matrix_lr=0.03", "--embedding_lr=0.25"])
    save_recipe(base, tmp_path / "recipe.yaml", {"total_batch_size": 1048576})
    sft = parse_recipe([str(RECIPES_DIR / "d20-sft.yaml")])
    assert sft.lrs_from_init and sft.init_lr_frac == 0.8 and sft.warmup_steps == 0 and sft.warmdown_ratio == 0.5
    got = inherit_learning_rates(sft, tmp_path)
    assert (got.matrix_lr, got.embedding_lr, got.unembedding_lr, got.scalar_lr) == (0.03, 0.25, 0.008, 0.5)
    plan = derive_plan(got, 1000, 10**6, world_size=8, tokens_per_epoch=10 * 1048576)
    assert plan.lrs["matrix_lr"] == pytest.approx(0.03 * 0.8) and plan.batch_lr_scale == 1.0
    with pytest.raises(FileNotFoundError, match="lrs_from_init=true but .*recipe.yaml does not exist"):
        inherit_learning_rates(sft, tmp_path / "converted")


# ----------------------------------------------------------------------------- nonsense refused at start


@pytest.mark.parametrize("override, message", [
    ("--muon_momentum_end=1", "muon_momentum_end=1 is invalid: expected a value in [0, 1)"),
    ("--muon_momentum_start=-0.1", "muon_momentum_start=-0.1 is invalid"),
    ("--grad_clip=-1", "grad_clip=-1 is invalid: expected >= 0"),
    ("--save_every=0", "save_every=0 is invalid: expected a positive integer, or -1 (never)"),
    ("--eval_every=0", "eval_every=0 is invalid"),
    ("--sample_every=-5", "sample_every=-5 is invalid"),
    ("--eval_tokens=0", "eval_tokens=0 is invalid: expected a positive integer"),
    ("--num_iterations=0", "num_iterations=0 is invalid"),
    ("--target_flops=0", "target_flops=0 is invalid: expected a positive number, or -1 (unused)"),
    ("--lora_dropout=1", "lora_dropout=1 is invalid"),
    ("--weight_decay=-0.1", "weight_decay=-0.1 is invalid"),
])
def test_out_of_range_values_name_the_key(override, message):
    with pytest.raises(ValueError) as info:
        parse_recipe([override])
    assert message in str(info.value)


def test_keep_checkpoints_must_keep_one_when_saving():
    with pytest.raises(ValueError, match="keep_checkpoints=0 is invalid: expected >= 1 when checkpoints are saved"):
        parse_recipe(["--keep_checkpoints=0", "--save_every=10"])
    with pytest.raises(ValueError, match="keep_checkpoints=0"):
        parse_recipe(["--keep_checkpoints=0", "--max_steps_per_run=10"])
    assert parse_recipe(["--keep_checkpoints=0"]).keep_checkpoints == 0  # never saves a step checkpoint


def test_unknown_model_config_fields_are_refused():
    with pytest.raises(ValueError, match=r"unknown field 'droput'; did you mean dropout"):
        parse_recipe(["--model_config={droput: 0.1}"])
    recipe = parse_recipe(["--model_config={dropout: 0.1, n_embd: 128, rope_theta: 50000.0}"])  # aliases too
    assert recipe.model_config["dropout"] == 0.1


def test_a_model_that_cannot_fit_is_refused_before_allocation():
    from hf_nanogpt.planning import check_fits_in_memory, training_memory_lower_bound

    recipe = parse_recipe(["--max_seq_len=100000000", "--depth=4", "--head_dim=64"])
    config = build_model_config(recipe, _Vocab())
    with pytest.raises(ValueError, match=r"max_seq_len=100000000 and device_batch_size=32: one training step needs "
                                         r"at least [\d,.]+ GiB .*lower max_seq_len or device_batch_size"):
        check_fits_in_memory(recipe, config, "cpu")
    small = parse_recipe(["--max_seq_len=256", "--depth=2", "--head_dim=64", "--device_batch_size=2"])
    config = build_model_config(small, _Vocab())
    check_fits_in_memory(small, config, "cpu")
    bound = training_memory_lower_bound(config, 2, 256, fused_loss=False)
    params = NanoGPTForCausalLM(config).num_parameters()
    assert bound["weights, gradients, optimizer"] == 12 * params and bound["logits"] == 4 * 2 * 256 * config.vocab_size
    # the loop's fused loss holds one (block, V) float32 block of logits, not the micro-batch's (B, T, V)
    from hf_nanogpt.loss_nanogpt import chunk_rows

    fused = training_memory_lower_bound(config, 32, 2048)
    block = min(32 * 2048, chunk_rows(32 * 2048, config.hidden_size, config.vocab_size, torch.device("cpu")))
    assert fused["logits"] == 4 * block * config.vocab_size < 4 * 32 * 2048 * config.vocab_size
