"""The plan of a recipe for a model: the values derived from the recipe (`derive_plan`: steps, batch,
accumulation, transferred lrs and weight decay), nanochat's scaling-parameter count, the d12 reference,
the memory check made before allocating, the stage's optimizer, and `--plan_only` (the resolved recipe
and plan as JSON, without reading any data).

    python scripts/pretrain.py recipes/d20.yaml --plan_only=true              # 1 process
    WORLD_SIZE=8 python scripts/pretrain.py recipes/d20.yaml --plan_only=true # as an 8-GPU launch would

Scaling parameters (what `target_param_data_ratio` multiplies, nanochat master's count since its
2026-01-27 scaling-law study): the 2-D matrices inside the blocks plus the LM head. The blocks' matrices
include the value-embedding gates where the model has them (nanochat counts `transformer.h` whole); the
embeddings, value embeddings, smear gate and scalars are left out. A tied head (GPT-2 family) still does
the output matmul, so its table counts as the head.
"""

import dataclasses
import math
import os
from dataclasses import asdict, dataclass

import torch

from .optim import build_optimizer
from .recipe import UNSET, TrainRecipe


REFERENCE_DEPTH = 12
REFERENCE_BATCH_SIZE = 2**19
POWER_LINES_EXPONENT = 0.383  # B_opt ~ D^0.383 (Bergsma et al. 2025, "Power Lines", arXiv:2505.13738)


@dataclass
class TrainingPlan:
    """Values derived from a recipe, the model and the launch (logged and saved with the recipe)."""

    world_size: int
    tokens_per_micro_step: int  # device_batch_size * max_seq_len * world_size
    total_batch_size: int  # tokens per optimizer step
    batch_size_source: str  # "total_batch_size", "power_lines" or "one micro-step"
    grad_accum_steps: int
    num_iterations: int
    horizon_source: str  # which recipe key set num_iterations
    total_tokens: int
    flops_per_token: int
    total_flops: float
    scaling_params: int  # block matrices + LM head: what the data:param ratio counts (nanochat master)
    # hyperparameter transfer (hyperparameter_transfer=nanochat; 1.0 / the recipe's values otherwise)
    reference_tokens: int | None  # D_ref = ratio x d12's scaling parameters
    target_tokens: int | None  # D = ratio x this model's scaling parameters
    batch_lr_scale: float  # sqrt(B / B_ref)
    weight_decay: float  # Muon weight decay at step 0: weight_decay x sqrt(B / B_ref) x D_ref / D
    lrs: dict  # peak lrs as the optimizer receives them (recipe lr x batch_lr_scale x init_lr_frac)
    # schedules (hf_nanogpt/schedules.py)
    lr_schedule: str
    warmup_steps: int
    warmdown_steps: int
    final_lr_frac: float


def derive_plan(recipe: TrainRecipe, flops_per_token: int, scaling_params: int, world_size: int = 1,
                tokens_per_epoch: int | None = None, reference_scaling_params: int | None = None) -> TrainingPlan:
    """Derive the batch, the number of steps, the transferred lrs and weight decay (nanochat master's
    `base_train.py`, numbered as there).

    `scaling_params` = block matrices + LM head of the model (nanochat master's scaling-law count);
    `reference_scaling_params` the same of the d12 reference (needed by hyperparameter_transfer=nanochat).

    1. horizon D = int(target_param_data_ratio x scaling_params) tokens; D_ref the same for d12;
    2. batch: total_batch_size, or with -1 and the nanochat transfer Power Lines
       2^round(log2(B_ref (D / D_ref)^0.383)), else one micro-step (device_batch_size x max_seq_len x world);
       it must be a multiple of the micro-step: grad_accum = ratio;
    3. transfer: every lr x sqrt(B / B_ref);
    4. transfer: weight decay x sqrt(B / B_ref) x D_ref / D (the T_epoch rule, arXiv:2405.13698);
    5. steps = num_iterations, else round(target_flops / (flops_per_token x B)), else D // B (pretraining),
       else round(num_epochs x tokens_per_epoch / B).
    """

    transfer = recipe.hyperparameter_transfer == "nanochat"
    micro = recipe.device_batch_size * recipe.max_seq_len * world_size
    target = reference = None
    if recipe.target_param_data_ratio > 0:  # 1.
        target = int(recipe.target_param_data_ratio * scaling_params)
    if transfer:
        if reference_scaling_params is None:
            raise ValueError("hyperparameter_transfer=nanochat needs the d12 reference's scaling parameters")
        reference = int(recipe.target_param_data_ratio * reference_scaling_params)
    if recipe.total_batch_size != UNSET:  # 2.
        total, batch_source = recipe.total_batch_size, "total_batch_size"
    elif transfer:
        predicted = REFERENCE_BATCH_SIZE * (target / reference) ** POWER_LINES_EXPONENT
        total, batch_source = 2 ** round(math.log2(predicted)), "power_lines"
    else:
        total, batch_source = micro, "one micro-step"
    if total <= 0 or total % micro:
        derived = f" ({batch_source}: {total} tokens)" if batch_source == "power_lines" else ""
        raise ValueError(
            f"recipe key total_batch_size={recipe.total_batch_size}{derived} is not a "
            f"positive multiple of device_batch_size x max_seq_len x processes = {recipe.device_batch_size} x "
            f"{recipe.max_seq_len} x {world_size} = {micro}: lower device_batch_size or pick a multiple of {micro}")
    batch_lr_scale = math.sqrt(total / REFERENCE_BATCH_SIZE) if transfer else 1.0  # 3.
    weight_decay = recipe.weight_decay * batch_lr_scale * (reference / target) if transfer else recipe.weight_decay
    if recipe.num_iterations > 0:  # 5.
        steps, source = recipe.num_iterations, "num_iterations"
    elif recipe.target_flops > 0:
        steps, source = round(recipe.target_flops / (flops_per_token * total)), "target_flops"
    elif recipe.stage == "base" and target:
        steps, source = target // total, "target_param_data_ratio"
    elif recipe.num_epochs > 0 and tokens_per_epoch:
        steps, source = round(recipe.num_epochs * tokens_per_epoch / total), "num_epochs"
    else:
        raise ValueError("recipe sets no training horizon: set num_iterations, target_flops, "
                         "target_param_data_ratio (pretraining) or num_epochs (mid/sft)")
    steps = max(1, steps)
    scale = batch_lr_scale * recipe.init_lr_frac
    lrs = {k: getattr(recipe, k) * scale for k in ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr",
                                                    "lora_lr")}
    return TrainingPlan(world_size=world_size, tokens_per_micro_step=micro, total_batch_size=total,
                        batch_size_source=batch_source, grad_accum_steps=total // micro, num_iterations=steps,
                        horizon_source=source, total_tokens=steps * total, flops_per_token=flops_per_token,
                        total_flops=float(steps) * total * flops_per_token, scaling_params=scaling_params,
                        reference_tokens=reference, target_tokens=target, batch_lr_scale=batch_lr_scale,
                        weight_decay=weight_decay, lrs=lrs, lr_schedule=recipe.lr_schedule,
                        warmup_steps=recipe.warmup_steps, warmdown_steps=round(recipe.warmdown_ratio * steps),
                        final_lr_frac=recipe.final_lr_frac)


# ----------------------------------------------------------------------------- memory, before allocation


def training_memory_lower_bound(config, batch_size: int, seq_len: int, device="cpu",
                                fused_loss: bool = True) -> dict[str, int]:
    """Bytes a training step needs at the very least, from the model built on the meta device (no
    memory is allocated): float32 weights, their gradients and one optimizer state each (Muon keeps
    one momentum, AdamW two), the non-persistent buffers (rotary tables grow with the context), the
    float32 logits the loss holds at once and one (B, T, width) float32 activation per layer.
    The training loop's fused loss (`fused_loss`, loss_nanogpt.py) holds one (block, vocab) block of
    logits at a time, the plain path the (B, T, vocab) logits of the micro-batch.
    The real peak is higher; a recipe whose lower bound already exceeds the device is refused."""
    import torch

    from .loss_nanogpt import chunk_rows
    from .modeling_nanogpt import NanoGPTForCausalLM

    with torch.device("meta"):
        model = NanoGPTForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    tokens = batch_size * seq_len
    return {"weights, gradients, optimizer": 12 * params,
            "buffers": sum(b.numel() * b.element_size() for b in model.buffers()),
            "logits": 4 * config.vocab_size * (min(tokens, chunk_rows(tokens, config.hidden_size, config.vocab_size,
                                                                      torch.device(device))) if fused_loss else tokens),
            "activations": 4 * tokens * config.hidden_size * config.num_hidden_layers}


def device_memory_bytes(device) -> tuple[int, str]:
    """(total memory, description) of a torch device: the GPU's memory, else the machine's RAM."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.total_memory, f"GPU {props.name}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "machine's RAM"


def check_fits_in_memory(recipe: TrainRecipe, config, device) -> None:
    """Refuse, naming max_seq_len and device_batch_size, a recipe whose model and micro-batch cannot fit
    the device (estimated before anything is allocated: `training_memory_lower_bound`)."""
    parts = training_memory_lower_bound(config, recipe.device_batch_size, recipe.max_seq_len, device)
    need, (have, where) = sum(parts.values()), device_memory_bytes(device)
    if need > have:
        gib = lambda n: f"{n / 2**30:,.1f} GiB"  # noqa: E731
        detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
        raise ValueError(f"recipe keys max_seq_len={recipe.max_seq_len} and device_batch_size="
                         f"{recipe.device_batch_size}: one training step needs at least {gib(need)} ({detail}), "
                         f"more than the {where} ({gib(have)}); lower max_seq_len or device_batch_size")


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
                           adamw_betas=tuple(recipe.adamw_betas),
                           ns_dtype=None if recipe.muon_ns_dtype == "auto" else getattr(torch, recipe.muon_ns_dtype))


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
