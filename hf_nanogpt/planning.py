"""The plan of a recipe for a model: nanochat's scaling-parameter count, the d12 reference, the stage's
optimizer, and `--plan_only` (the resolved recipe and plan as JSON, without reading any data).

    python scripts/pretrain.py recipes/d20.yaml --plan_only=true              # 1 process
    WORLD_SIZE=8 python scripts/pretrain.py recipes/d20.yaml --plan_only=true # as an 8-GPU launch would

Scaling parameters (what `target_param_data_ratio` multiplies, nanochat master's count since its
2026-01-27 scaling-law study): the 2-D matrices inside the blocks plus the LM head. The blocks' matrices
include the value-embedding gates where the model has them (nanochat counts `transformer.h` whole); the
embeddings, value embeddings, smear gate and scalars are left out. A tied head (GPT-2 family) still does
the output matmul, so its table counts as the head.
"""

import dataclasses
import os
from dataclasses import asdict

import torch

from .optim import build_optimizer
from .recipe import REFERENCE_DEPTH, TrainingPlan, TrainRecipe, derive_plan


def scaling_parameters(model) -> int:
    """Block matrices + LM head of a `NanoGPTForCausalLM` (the head's table even when tied)."""
    return model.parameter_counts()["matrices"] + model.lm_head.weight.numel()


class _Vocabulary:
    """What `build_model_config` reads from a tokenizer, for sizing a model without one."""

    bos_token_id = eos_token_id = pad_token_id = None

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size


def meta_model(recipe: TrainRecipe, tokenizer):
    """The recipe's model on the meta device: shapes and parameter counts, no memory, no init cost."""
    from .modeling_nanogpt import NanoGPTForCausalLM
    from .training import build_model_config  # lazy: training imports this module

    config = build_model_config(recipe, tokenizer)
    with torch.device("meta"):
        return NanoGPTForCausalLM(config)


def plan_for_model(recipe: TrainRecipe, model, world_size: int = 1, tokens_per_epoch: int | None = None
                   ) -> TrainingPlan:
    """`derive_plan` for `model`; the d12 reference (built on the meta device with the recipe's other
    settings and the same vocabulary) only when the recipe transfers hyperparameters from it."""
    reference = None
    if recipe.hyperparameter_transfer == "nanochat":
        vocab = _Vocabulary(recipe.vocab_size if recipe.vocab_size > 0 else model.config.vocab_size)
        reference = scaling_parameters(meta_model(dataclasses.replace(recipe, depth=REFERENCE_DEPTH), vocab))
    plan = derive_plan(recipe, model.flops_per_token(recipe.max_seq_len), scaling_parameters(model), world_size,
                       tokens_per_epoch, reference_scaling_params=reference)
    if recipe.seq_len_warmup_steps > 0:
        curriculum_flops(plan, recipe, model)
    return plan


def row_len_at(stage_or_recipe, step: int) -> int:
    """The training row length at `step` (`max_seq_len`, or the sequence-length warmup's)."""
    from .data.pretrain import curriculum_seq_len

    r = getattr(stage_or_recipe, "recipe", stage_or_recipe)
    return curriculum_seq_len(step, r.seq_len_start, r.max_seq_len, r.seq_len_warmup_steps,
                              r.device_batch_size * r.max_seq_len)


def curriculum_flops(plan: TrainingPlan, recipe: TrainRecipe, model) -> None:
    """Under a sequence-length warmup the attention FLOPs per token follow the row length: total FLOPs are
    summed over the steps, and a `target_flops` horizon gets the number of steps that reaches it (the
    tokens per step, hence the horizon in tokens, stay as derived)."""
    cache: dict[int, int] = {}

    def step_flops(step: int) -> float:
        t = row_len_at(recipe, step)
        if t not in cache:
            cache[t] = model.flops_per_token(t)
        return float(cache[t]) * plan.total_batch_size

    if plan.horizon_source == "target_flops":
        steps, done = 0, 0.0
        while done < recipe.target_flops:
            done += step_flops(steps)
            steps += 1
        plan.num_iterations, plan.total_tokens = steps, steps * plan.total_batch_size
    plan.total_flops = sum(step_flops(s) for s in range(plan.num_iterations))


def build_stage_optimizer(model, recipe: TrainRecipe, plan: TrainingPlan, width: int) -> torch.optim.Optimizer:
    """The stage's `MuonAdamW` (in `Lookahead` when `lookahead_k > 0`) with the plan's transferred lrs and
    weight decay; the Muon momentum starts at the schedule's first value."""
    return build_optimizer(model, matrix_lr=recipe.matrix_lr, embedding_lr=recipe.embedding_lr,
                           unembedding_lr=recipe.unembedding_lr, scalar_lr=recipe.scalar_lr, lora_lr=recipe.lora_lr,
                           weight_decay=plan.weight_decay, momentum=recipe.muon_momentum_start,
                           muon_variant=recipe.muon_variant, lr_scale=recipe.init_lr_frac,
                           batch_lr_scale=plan.batch_lr_scale, width=width, lookahead_k=recipe.lookahead_k,
                           lookahead_alpha=recipe.lookahead_alpha, matrix_optimizer=recipe.optimizer,
                           adamw_betas=tuple(recipe.adamw_betas))


def plan_only(recipe: TrainRecipe) -> dict:
    """The resolved recipe, the derived plan and the parameter counts of a pretraining recipe, reading no
    data: the model is built on the meta device. The vocabulary comes from the recipe's `vocab_size`, else
    the tokenizer folder, else (the built-in `stdlib` corpus) the tokenizer that training would make."""
    from .training import STDLIB_TOKENIZER, tokenizer_path

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if recipe.stage != "base":
        raise ValueError(f"plan_only sizes a fresh model: stage {recipe.stage!r} starts from {recipe.init_from} "
                         "(its plan needs the mixture's length)")
    if recipe.vocab_size > 0:
        tokenizer = _Vocabulary(recipe.vocab_size)
    else:
        folder = tokenizer_path(recipe)
        if folder.exists():
            from .tokenization import load_tokenizer

            tokenizer = load_tokenizer(folder)
        elif recipe.train_data == "stdlib":
            tokenizer = _Vocabulary(STDLIB_TOKENIZER["vocab_size"])
        else:
            raise FileNotFoundError(f"plan_only: tokenizer folder {folder} does not exist and the recipe sets no "
                                    "vocab_size: set --vocab_size=N (tok_train.py's default is 32768)")
    model = meta_model(recipe, tokenizer)
    plan = plan_for_model(recipe, model, world)
    return {"recipe": recipe.to_dict(), "plan": asdict(plan), "parameters": model.parameter_counts(),
            "vocab_size": len(tokenizer)}
