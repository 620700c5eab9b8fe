"""The one Accelerate training loop shared by pretraining, mid-training and SFT.

    accelerate launch scripts/pretrain.py recipes/d20.yaml          # 8 GPUs: see recipes/accelerate/
    python scripts/pretrain.py recipes/tiny.yaml --num_iterations=50 # one process, CPU

A stage is built by `prepare_stage(recipe)` (model, tokenizer, data, optimizer, derived plan) and run
by `train(stage)`; `run(recipe)` does both and writes the final model. What happens at each step:

1. `grad_accum_steps` micro-batches are drawn; their supervised targets are counted and summed over
   processes, and every micro-batch loss is a sum over its targets divided by that global count, so
   one step is exactly the mean over the whole (global) batch however it is split (the loss is
   multiplied by the process count because DDP averages gradients over processes);
2. a non-finite loss stops the run before the optimizer touches the weights (`nan_policy=stop`, the
   last checkpoint stays the last good one) or skips the step (`nan_policy=skip`, at most 10 in a row);
3. gradients are clipped (`grad_clip`, `grad_clip_mode`: after the all-reduce), the schedules (lr
   multiplier, Muon momentum and weight decay: `hf_nanogpt.schedules.Schedule`) are applied, the
   optimizer (MuonAdamW, optionally inside Lookahead) steps; an MoE model then sums its expert loads over
   processes and moves its bias-balanced routers' biases (`hf_nanogpt.moe_nanogpt.moe_step`, outside the gradient);
4. every `log_every` steps a row (loss, lr multiplier, grad norm, tokens/s, MFU, per-layer expert load max/mean
   for MoE models) goes to the progress bar, `train_log.jsonl` and the tracker; val bits per byte and
   perplexity every `eval_every`, CORE every
   `core_metric_every`, samples every `sample_every`, a checkpoint every `save_every` steps.

Resume (`resume_from=latest` or a checkpoint folder) restores weights, optimizer, RNG and data-loader
state, so the per-step losses continue exactly as if the run had never stopped.
"""

import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from .checkpointing import Checkpointer, save_model_folder
from .clipping import clip_gradients
from .configuration_nanogpt import NanoGPTConfig
from .evaluation.distributed import all_reduce_sum
from .modeling_nanogpt import NanoGPTForCausalLM
from .moe_nanogpt import moe_step
from .optim import apply_schedule, cpu_has_bf16_matmul, parameter_groups_summary
from .paths import base_dir, resolve_stage
from .planning import TrainingPlan, build_stage_optimizer, check_fits_in_memory, plan_for_model, row_len_at
from .recipe import TrainRecipe, inherit_learning_rates, save_recipe
from .schedules import Schedule
from .stages import STAGES

logger = logging.getLogger(__name__)

MAX_SKIPPED_STEPS = 10
# The tokenizer trained on the fly for the embedded default (the `stdlib` corpus) when the recipe's
# tokenizer folder does not exist yet: the same settings as `scripts/speedrun.sh tiny`.
STDLIB_TOKENIZER = dict(vocab_size=4096, max_chars=20_000_000)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the weights were not updated with it."""

    expected = True  # scripts print its message without a traceback (hf_nanogpt.cli)


@dataclass
class Stage:
    """Everything a training run needs, built once by `prepare_stage`."""

    recipe: TrainRecipe
    accelerator: Accelerator
    model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    train_loader: object
    val_loader: object | None
    plan: TrainingPlan
    output_dir: Path
    checkpointer: Checkpointer
    token_bytes: torch.Tensor
    peak_flops: float
    peak_flops_source: str
    schedule: Schedule | None = None  # lr multiplier, Muon momentum and weight decay per step
    start_step: int = 0
    history: dict = field(default_factory=dict)
    val_start_state: dict | None = None  # every evaluation reads the same val batches from the start
    log_bytes: int | None = None  # size of train_log.jsonl when the resumed checkpoint was saved


# ----------------------------------------------------------------------------- building a stage


def build_model_config(recipe: TrainRecipe, tokenizer) -> NanoGPTConfig:
    """The model of a pretraining recipe: the `model_preset` family (nanochat master, its January-2026
    layout, or GPT-2), `from_depth` sizing, the tokenizer's size and ids, then the recipe's overrides."""
    if recipe.vocab_size > 0 and len(tokenizer) != recipe.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but recipe key vocab_size={recipe.vocab_size}: "
                         "use a tokenizer of that size or set vocab_size=-1 to size the model by the tokenizer")
    fields = dict(vocab_size=len(tokenizer), max_position_embeddings=recipe.max_seq_len,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    if recipe.model_preset == "gpt2":
        # nanoGPT pads the vocabulary itself (50257 -> 50304) and predicts over every row; the nanochat
        # presets pad the tables instead (pad_vocab_size_to=64) and crop the logits to the tokenizer's size
        fields["vocab_size"] = ((len(tokenizer) + 63) // 64) * 64
    if recipe.n_kv_head > 0:
        fields["num_key_value_heads"] = recipe.n_kv_head
    if recipe.window_pattern:
        fields["window_pattern"] = recipe.window_pattern
        if recipe.sliding_window > 0:
            fields["sliding_window"] = recipe.sliding_window
    fields.update(recipe.model_config)
    try:
        return NanoGPTConfig.from_depth(recipe.depth, aspect_ratio=recipe.aspect_ratio, head_dim=recipe.head_dim,
                                        preset=recipe.model_preset, **fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"recipe does not describe a valid model: {err}") from err


def auto_mixed_precision(device_type: str | None = None) -> str:
    """What `dtype: auto` trains in on `device_type` (default: cuda when present, else cpu): "bf16" on GPUs
    that support it and on CPUs that multiply bf16 natively (AVX512-BF16 or AMX), else "no" (fp32).

    nanochat trains in fp32 on every CPU; on these CPUs a whole tiny step runs ~2x faster in bf16 (9,464 vs
    4,492 tokens/s for recipes/tiny.yaml on a 2-core EPYC), with attention kept in fp32 (blocks_nanogpt.py)."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if device_type == "cpu" and cpu_has_bf16_matmul() else "no"


def mixed_precision(recipe: TrainRecipe) -> str:
    """accelerate's mixed_precision for `recipe.dtype` ("auto": `auto_mixed_precision()`)."""
    if recipe.dtype == "auto":
        return auto_mixed_precision()
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}[recipe.dtype]


# Dense bf16 peaks (no sparsity) of common accelerators, FLOP/s; the first name found in the device name
# wins, so the PCIe H100 (lower clocks) is listed before the SXM part.
GPU_PEAKS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12, "B200": 2250e12,
             "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12, "3090": 71e12, "V100": 125e12}


def gpu_peak_flops(name: str) -> tuple[float, str]:
    """(dense bf16 peak FLOP/s, description) of a GPU from its `torch.cuda.get_device_name`; nan if unknown."""
    for key, peak in GPU_PEAKS.items():
        if key in name:
            return peak, f"{name}: {peak / 1e12:.0f} TFLOP/s dense bf16 (datasheet)"
    return float("nan"), f"{name}: peak unknown, MFU not reported"


def device_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from) for MFU; on CPUs, that of `dtype` matmuls."""
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device))
    # CPU: no datasheet; measure what a large matmul in the training dtype reaches here (a ceiling in practice).
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    a @ b
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        a @ b
    peak = n * 2 * 1024**3 / (time.perf_counter() - t0)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
    return peak, f"CPU ({torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s measured {name} matmul"


def _stage_data(recipe: TrainRecipe, tokenizer, rank: int, world: int):
    """(train loader, val loader or None, tokens per epoch or None) for the recipe's stage."""
    B, T = recipe.device_batch_size, recipe.max_seq_len
    if recipe.stage == "base":
        from .data.pretrain import build_pretrain_loader

        if recipe.val_data is None and recipe.train_data.rstrip().endswith("]"):
            # a sliced spec is used exactly as written for either split: validation would be training data
            raise ValueError(f"recipe key val_data is unset but train_data={recipe.train_data!r} is sliced; name "
                             "the held-out part explicitly, e.g. val_data: input.txt[90%:]")
        train = build_pretrain_loader(recipe.train_data, tokenizer, B, T, "train", rank=rank, world_size=world,
                                      seed=recipe.seed, num_proc=recipe.num_proc, packing=recipe.packing)
        val = build_pretrain_loader(recipe.val_data or recipe.train_data, tokenizer, B, T, "val", rank=rank,
                                    world_size=world, seed=recipe.seed, num_proc=recipe.num_proc,
                                    packing=recipe.packing)
        return train, val, None
    from .data.sft import build_sft_loader
    from .tasks.mixture import build_mixture

    mixture = build_mixture(recipe.mixture, seed=recipe.seed)
    train = build_sft_loader(mixture, tokenizer, B, T, rank=rank, world_size=world, seed=recipe.seed,
                             mode=recipe.sft_packing, epochs=None, num_proc=recipe.num_proc)
    val = None
    if recipe.val_mixture:
        val = build_sft_loader(build_mixture(recipe.val_mixture, seed=recipe.seed), tokenizer, B, T, rank=rank,
                               world_size=world, seed=recipe.seed, mode=recipe.sft_packing, epochs=1,
                               num_proc=recipe.num_proc)
    # an epoch, in row tokens over all processes (what derive_plan divides by total_batch_size)
    return train, val, train.num_batches(0) * B * world * T


def tokenizer_path(recipe: TrainRecipe) -> Path:
    """The recipe's tokenizer folder (a stage name such as `tokenizer` resolves in the run folder)."""
    from .paths import STAGES as RUN_FOLDERS

    return base_dir() / recipe.tokenizer if recipe.tokenizer in RUN_FOLDERS else Path(recipe.tokenizer)


def _tokenizer_folder(recipe: TrainRecipe, accelerator: Accelerator) -> Path:
    """The recipe's tokenizer folder. Missing for the embedded default (`stdlib` corpus): trained here
    on the main process and saved where the recipe looks for it. Missing otherwise: an error naming
    the `scripts/tok_train.py` command that makes it."""
    folder = tokenizer_path(recipe)
    if folder.exists():
        return folder
    if recipe.train_data != "stdlib":
        data = recipe.train_data.replace("'", "'\\''")
        raise FileNotFoundError(
            f"tokenizer folder {folder} does not exist (recipe key tokenizer={recipe.tokenizer!r}); train it first:\n"
            f"  python scripts/tok_train.py --data '{data}' --vocab_size 32768 --output_dir {folder}")
    if accelerator.is_main_process:
        from .data.corpus import iter_stdlib_texts
        from .tokenization import train_tokenizer

        logger.info("tokenizer folder %s does not exist: training a %d-token BPE on %d M characters of the "
                    "stdlib corpus (as scripts/tok_train.py --data stdlib would)", folder,
                    STDLIB_TOKENIZER["vocab_size"], STDLIB_TOKENIZER["max_chars"] // 1_000_000)
        tokenizer = train_tokenizer(iter_stdlib_texts("train"), **STDLIB_TOKENIZER)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)  # appears complete or not at all
        logger.info("saved the tokenizer to %s", folder)
    accelerator.wait_for_everyone()
    return folder


def _load_start_model(recipe: TrainRecipe, accelerator: Accelerator):
    """(model, tokenizer) for the stage: a fresh model for pretraining, else the `init_from` folder."""
    from .tokenization import load_tokenizer

    if recipe.stage == "base" and recipe.init_from is None:
        tokenizer = load_tokenizer(_tokenizer_folder(recipe, accelerator))
        config = build_model_config(recipe, tokenizer)
        check_fits_in_memory(recipe, config, accelerator.device)  # before allocating anything
        return NanoGPTForCausalLM(config), tokenizer
    folder = resolve_stage(recipe.init_from)
    tokenizer = load_tokenizer(folder)
    check_fits_in_memory(recipe, NanoGPTConfig.from_pretrained(folder), accelerator.device)
    model = NanoGPTForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if model.config.max_position_embeddings < recipe.max_seq_len and model.config.position_embedding == "learned":
        raise ValueError(f"recipe key max_seq_len={recipe.max_seq_len} exceeds the learned position table "
                         f"({model.config.max_position_embeddings}) of {folder}")
    return model, tokenizer


def _apply_lora(model, recipe: TrainRecipe):
    from peft import LoraConfig, get_peft_model

    from . import LORA_TARGET_MODULES

    targets = [t for t in LORA_TARGET_MODULES if any(n.endswith(t) for n, _ in model.named_modules())]
    config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def prepare_stage(recipe: TrainRecipe, accelerator: Accelerator | None = None) -> Stage:
    """Build the model, data, optimizer and plan of `recipe`; restore a checkpoint if asked."""
    from .tokenization import token_bytes

    recipe.validate()
    output_dir = Path(recipe.output_dir) if recipe.output_dir else base_dir() / STAGES[recipe.stage].folder
    # Without GPUs, a torchrun-style launch (`accelerate launch --num_processes 2`) needs cpu=True for
    # accelerate to set up gloo (MULTI_CPU) instead of silently running independent processes.
    cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = accelerator or Accelerator(cpu=cpu, mixed_precision=mixed_precision(recipe),
                                             log_with=None if recipe.tracker == "none" else recipe.tracker,
                                             project_dir=str(output_dir))
    set_seed(recipe.seed)  # same init on every process
    model, tokenizer = _load_start_model(recipe, accelerator)
    if recipe.lora_r > 0:
        model = _apply_lora(model, recipe)
    rank, world = accelerator.process_index, accelerator.num_processes
    train_loader, val_loader, tokens_per_epoch = _stage_data(recipe, tokenizer, rank, world)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    counts = base.parameter_counts()
    if recipe.lrs_from_init:  # nanochat master's SFT: the lrs of the run that made init_from
        recipe = inherit_learning_rates(recipe, resolve_stage(recipe.init_from))
    plan = plan_for_model(recipe, base, world, tokens_per_epoch)
    optimizer = build_stage_optimizer(model, recipe, plan, base.config.hidden_size)
    model, optimizer = accelerator.prepare(model, optimizer)
    if recipe.compile:
        model = torch.compile(model)
    peak, peak_source = device_peak_flops(accelerator.device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        accelerator.mixed_precision, torch.float32))
    stage = Stage(recipe=recipe, accelerator=accelerator, model=model, tokenizer=tokenizer, optimizer=optimizer,
                  train_loader=train_loader, val_loader=val_loader, plan=plan, output_dir=output_dir,
                  checkpointer=Checkpointer(output_dir, accelerator, keep=recipe.keep_checkpoints),
                  token_bytes=token_bytes(tokenizer).to(accelerator.device), peak_flops=peak,
                  peak_flops_source=peak_source,
                  schedule=Schedule.from_recipe(recipe, plan.num_iterations, plan.weight_decay))
    if val_loader is not None:
        stage.val_start_state = val_loader.state_dict()
        _check_val_data(stage)
    if recipe.resume_from:
        path = stage.checkpointer.resolve(recipe.resume_from)
        meta, loader_state = stage.checkpointer.load(path, model, optimizer)
        if loader_state is None:
            raise ValueError(f"checkpoint {path} has no data-loader state for process {rank}: it was saved by "
                             f"{meta.get('world_size')} processes")
        train_loader.load_state_dict(loader_state)
        stage.start_step, stage.history = int(meta["step"]), meta.get("history", {})
        stage.log_bytes = meta.get("log_bytes")
    _log_setup(stage, counts)
    if accelerator.is_main_process and not recipe.dry_run:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, output_dir / "recipe.yaml", asdict(plan) | {"parameters": counts,
                                                                         "peak_flops": peak_source})
    if recipe.tracker != "none":
        # trackers' hyper-parameter tables take scalars and strings only
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in recipe.to_dict().items()}
        accelerator.init_trackers(recipe.run_name, config=config)
    return stage


def _log_setup(stage: Stage, counts: dict) -> None:
    if not stage.accelerator.is_main_process:
        return
    p = stage.plan
    logger.info("parameters: %s", ", ".join(f"{k}={v:,}" for k, v in counts.items()))
    for row in parameter_groups_summary(stage.optimizer):
        logger.info("optimizer group %(name)s: %(kind)s, %(tensors)d tensors, %(params)s params, lr %(lr).5g, "
                    "betas %(betas)s, weight decay %(weight_decay).4g", row)
    logger.info("plan: %d steps (%s) x %d tokens (%s) = %.3g tokens, grad accumulation %d over %d process(es), "
                "%.3g FLOPs/token, %.3g FLOPs total", p.num_iterations, p.horizon_source, p.total_batch_size,
                p.batch_size_source, p.total_tokens, p.grad_accum_steps, p.world_size, p.flops_per_token,
                p.total_flops)
    logger.info("schedule: lr %s, warmup %d, warmdown %d steps to %.3g; scaling params %s; lrs x %.4g (batch), "
                "Muon weight decay %.4g (%s); %s", p.lr_schedule, p.warmup_steps, p.warmdown_steps, p.final_lr_frac,
                f"{p.scaling_params:,}", p.batch_lr_scale, p.weight_decay, stage.recipe.weight_decay_schedule,
                ", ".join(f"{k} {v:.4g}" for k, v in p.lrs.items()))
    logger.info("MFU peak: %s", stage.peak_flops_source)
    if stage.start_step:
        logger.info("resumed at step %d", stage.start_step)


# ----------------------------------------------------------------------------- the loop


def _model_inputs(batch: dict, device) -> dict:
    """The model's training inputs; `use_cache=False` because training never decodes (a cache would hold
    every layer's K/V of the batch until the step ends)."""
    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "shift_labels", "attention_mask")}
    return inputs | {"use_cache": False}


def _check_val_data(stage: Stage) -> None:
    """An empty validation split fails at start, naming its recipe key, instead of at the first evaluation
    ("no target bytes"): every process must get at least one batch with a target."""
    batch = next(iter(stage.val_loader), None)
    stage.val_loader.load_state_dict(stage.val_start_state)
    ok = torch.tensor([int(batch is not None and bool((batch["shift_labels"] >= 0).any()))], device=stage.accelerator.device)
    if int(all_reduce_sum(ok)) == stage.accelerator.num_processes:
        return
    r = stage.recipe
    if r.stage != "base":
        raise ValueError(f"recipe key val_mixture: the validation mixture {r.val_mixture} gives no batch on some "
                         "process; add rows (size) or set val_mixture: []")
    spec = repr(r.val_data) if r.val_data else f"the held-out part of train_data={r.train_data!r}"
    raise ValueError(f"recipe key val_data: the validation split ({spec}) does not fill one row of max_seq_len + 1 = "
                     f"{r.max_seq_len + 1} tokens on every process (a single local file keeps only its last 10% for "
                     "validation); use a larger corpus, name val_data, or lower max_seq_len")


def evaluate_val_bpb(stage: Stage):
    """Val bits per byte and perplexity (`ValLoss`) over about `eval_tokens` tokens (None without val data)."""
    from .evaluation.bpb import evaluate_val_loss

    if stage.val_loader is None:
        return None
    r = stage.recipe
    steps = max(1, r.eval_tokens // (r.device_batch_size * r.max_seq_len * stage.accelerator.num_processes))
    stage.val_loader.load_state_dict(stage.val_start_state)  # the same batches at every evaluation
    with stage.accelerator.autocast():
        return evaluate_val_loss(stage.model, iter(stage.val_loader), stage.token_bytes, steps=steps)


class _Logger:
    """Writes `train_log.jsonl` (main process) and forwards rows to the tracker."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.path = stage.output_dir / "train_log.jsonl"
        self.enabled = stage.accelerator.is_main_process and not stage.recipe.dry_run
        if self.enabled and stage.start_step == 0 and self.path.exists():
            self.path.unlink()  # a fresh run starts a fresh log; a resumed one appends
        elif self.enabled and stage.log_bytes is not None and self.path.exists():
            with self.path.open("r+b") as f:  # cut the rows logged after the resumed checkpoint was saved
                f.truncate(min(stage.log_bytes, f.seek(0, os.SEEK_END)))

    def __call__(self, row: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self.stage.recipe.tracker != "none":
            self.stage.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def train(stage: Stage) -> dict:
    """Run the optimisation from `stage.start_step` to the planned number of steps; returns a summary."""
    from tqdm.auto import tqdm

    acc, r, plan, model, opt = stage.accelerator, stage.recipe, stage.plan, stage.model, stage.optimizer
    log = _Logger(stage)
    history = stage.history
    history.setdefault("val_bpb", [])
    named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    schedule = stage.schedule or Schedule.from_recipe(r, plan.num_iterations, plan.weight_decay)
    data = iter(stage.train_loader)
    step, skipped = stage.start_step, 0
    stop_at = plan.num_iterations if r.max_steps_per_run < 0 else min(plan.num_iterations,
                                                                          step + r.max_steps_per_run)
    tokens_done = 0  # real tokens processed by this run (padding excluded)
    loss_terms = r.loss_term_coefficients()  # extra terms of loss_nanogpt.LOSS_TERMS, logged apart
    curriculum = r.seq_len_warmup_steps > 0
    flops_per_token = {r.max_seq_len: plan.flops_per_token}  # by row length (attention depends on it)
    base_model = acc.unwrap_model(model)
    base_model = base_model.get_base_model() if hasattr(base_model, "get_base_model") else base_model
    # In a log file (not a terminal) redraw the bar every 30 s instead of at every step.
    bar = tqdm(total=plan.num_iterations, initial=step, disable=not acc.is_main_process, desc=r.stage,
               dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0)
    timer, train_time = time.perf_counter(), 0.0
    last_loss = float("nan")

    def due(every: int) -> bool:  # periodic work, never at step 0
        return every > 0 and step > 0 and step % every == 0

    model.train()
    while step < stop_at:
        # ---- periodic work on the weights *before* this step (step 0 = initial model)
        # (a resumed run evaluates at its first step too: the interrupted run saved before evaluating it)
        if r.eval_every > 0 and step % r.eval_every == 0:
            _evaluate(stage, step, history, log)
            timer = time.perf_counter()
        if due(r.core_metric_every):
            _core(stage, step, history, log)
            timer = time.perf_counter()
        if due(r.sample_every):
            _sample(stage, step)
            timer = time.perf_counter()

        # ---- one optimizer step over grad_accum_steps micro-batches
        row_len = row_len_at(r, step) if curriculum else r.max_seq_len
        if curriculum:  # shorter rows, more of them: the same tokens per micro-batch
            stage.train_loader.set_row_len(row_len)
        micro = [next(data) for _ in range(plan.grad_accum_steps)]
        # global supervised targets and real (non-padding) tokens of this step, in one collective
        counts = torch.stack([sum((b["shift_labels"] != -100).sum() for b in micro),
                              sum(b["attention_mask"].sum() if "attention_mask" in b else b["input_ids"].new_tensor(
                                  b["input_ids"].numel()) for b in micro)]).to(acc.device)
        n_items, step_tokens = all_reduce_sum(counts).unbind()
        n_items = n_items.clamp(min=1)
        # [loss, ce, *terms] summed over micro-batches (each already divided by the global count)
        sums = torch.zeros(2 + len(loss_terms), device=acc.device)
        for i, batch in enumerate(micro):
            sync = acc.no_sync(model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync:
                with acc.autocast():
                    # skip_logits: the fused head + softcap + loss of loss_nanogpt.py, no (B, T, V) logits
                    out = model(**_model_inputs(batch, acc.device), num_items_in_batch=n_items, skip_logits=True,
                                loss_terms=loss_terms or None)
                # out.loss = this micro-batch's summed loss / global count; DDP averages over processes
                acc.backward(out.loss * acc.num_processes)
            sums += torch.stack([out.loss.detach(), *(out.loss_terms[k] for k in ("ce", *loss_terms))]).float()
            del out
        sums = all_reduce_sum(sums).tolist()
        loss, parts = sums[0], dict(zip(("ce", *loss_terms), sums[1:]))
        if not math.isfinite(loss):
            opt.zero_grad(set_to_none=True)
            skipped += 1
            if r.nan_policy == "stop" or skipped > MAX_SKIPPED_STEPS:
                bar.close()
                last = stage.checkpointer.root / "latest"
                where = (f"the last good checkpoint is {stage.checkpointer.root / last.read_text().strip()}"
                         if last.exists() else "no checkpoint was saved before it")
                after = f" after {skipped - 1} skipped steps" if skipped > 1 else ""
                raise NonFiniteLossError(
                    f"non-finite loss ({loss}) at step {step}{after}; the weights were not updated with it and "
                    f"{where}. Lower the learning rates (matrix_lr={r.matrix_lr}, embedding_lr={r.embedding_lr}) "
                    "or set nan_policy=skip")
            logger.warning("non-finite loss at step %d: step skipped (%d in a row)", step, skipped)
            step += 1
            continue
        skipped = 0
        # gradients are complete here (accumulated, all-reduced): clip the global batch's gradient
        clip = clip_gradients(named_params, r.grad_clip, r.grad_clip_mode, unscale=acc.unscale_gradients)
        at = schedule.at(step)
        lr_mult = at["lr_mult"]
        apply_schedule(opt, lr_mult, at["momentum"], at["weight_decay"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        moe = moe_step(model, all_reduce_sum)  # {} without MoE layers; else the expert load per layer
        step += 1
        last_loss = loss

        # ---- bookkeeping
        elapsed = time.perf_counter() - timer
        timer = time.perf_counter()
        train_time += elapsed
        tokens_done += int(step_tokens)
        tok_s = int(step_tokens) / max(elapsed, 1e-9)
        if row_len not in flops_per_token:
            flops_per_token[row_len] = base_model.flops_per_token(row_len)
        mfu = flops_per_token[row_len] * tok_s / (stage.peak_flops * acc.num_processes)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)  # drawn at tqdm's own pace
        if step % r.log_every == 0 or step == plan.num_iterations:
            row = dict(step=step, loss=loss, lr_mult=lr_mult, muon_momentum=at["momentum"],
                       muon_weight_decay=at["weight_decay"], **clip, tokens_per_s=tok_s,
                       mfu=mfu if math.isfinite(mfu) else None, time_s=train_time, **moe)
            if loss_terms:  # each part's share of the loss: ce + terms == loss
                row |= {f"loss_{k}": v for k, v in parts.items()}
            if curriculum:
                row["seq_len"] = row_len
            log(row)
        if due(r.save_every) and step < plan.num_iterations and not r.dry_run:
            _save(stage, step, history)
    bar.close()
    data_stats = stage.train_loader.stats
    if acc.is_main_process and "cropped_fraction" in data_stats:
        logger.info("train data: %s packing, %.1f%% of the tokens read were cropped, %d rows in epoch %d",
                    data_stats["packing"], 100 * data_stats["cropped_fraction"], data_stats["rows"], data_stats["epoch"])
    finished = step >= plan.num_iterations
    if finished:
        _evaluate(stage, step, history, log)
        if r.core_metric_every > 0:
            _core(stage, step, history, log)
    elif not r.dry_run:  # stopped early on purpose (max_steps_per_run): leave a resumable checkpoint
        _save(stage, step, history)
    return dict(step=step, finished=finished, loss=last_loss, train_time_s=train_time, data=data_stats,
                tokens_per_s=(tokens_done / train_time) if train_time else None,
                val_bpb=history["val_bpb"][-1][1] if history["val_bpb"] else None,
                min_val_bpb=min((v for _, v in history["val_bpb"]), default=None), history=history)


def _evaluate(stage: Stage, step: int, history: dict, log) -> None:
    val = evaluate_val_bpb(stage)
    if val is None:
        return
    if history["val_bpb"] and history["val_bpb"][-1][0] == step:
        return  # already evaluated at this step (e.g. the final step coincides with eval_every)
    history["val_bpb"].append((step, val.bpb))
    # perplexity = exp(nats per token) over the same targets: comparable only under the same tokenizer
    log(dict(step=step, val_bpb=val.bpb, val_ppl=val.perplexity if math.isfinite(val.perplexity) else None))
    if stage.accelerator.is_main_process:
        logger.info("step %d: val bpb %.4f, perplexity %.2f", step, val.bpb, val.perplexity)


def _core(stage: Stage, step: int, history: dict, log) -> None:
    from .evaluation.core import evaluate_core

    model = stage.accelerator.unwrap_model(stage.model)
    with stage.accelerator.autocast():
        result = evaluate_core(model, stage.tokenizer, max_per_task=stage.recipe.core_metric_max_per_task)
    history.setdefault("core", []).append((step, result["core"]))
    log(dict(step=step, core=result["core"]))


def _sample(stage: Stage, step: int) -> None:
    from .evaluation.base import sample_base

    if not stage.accelerator.is_main_process:
        return
    model = stage.accelerator.unwrap_model(stage.model)
    for row in sample_base(model, stage.tokenizer, max_new_tokens=24):
        logger.info("sample @%d: %r -> %r", step, row["prompt"], row["completion"])
    model.train()


def _save(stage: Stage, step: int, history: dict) -> Path:
    log = stage.output_dir / "train_log.jsonl"  # its size now is where a resume from here cuts it back to
    path = stage.checkpointer.save(step, stage.model, stage.tokenizer, stage.optimizer,
                                   stage.train_loader.state_dict(),
                                   {"history": history, "plan": asdict(stage.plan), "recipe": stage.recipe.to_dict(),
                                    "log_bytes": log.stat().st_size if log.exists() else 0})
    if stage.accelerator.is_main_process:
        logger.info("saved checkpoint %s", path)
    return path


# ----------------------------------------------------------------------------- the whole stage


def finalize(stage: Stage, summary: dict) -> Path | None:
    """Save the final model folder (merged model + adapters for LoRA) and append the report section."""
    acc, r = stage.accelerator, stage.recipe
    if r.dry_run or not summary["finished"]:
        return None
    acc.wait_for_everyone()
    model = acc.unwrap_model(stage.model)
    if acc.is_main_process:
        if hasattr(model, "merge_and_unload"):  # LoRA: keep the adapters, publish the merged model
            save_model_folder(stage.output_dir / "adapter", model, stage.tokenizer)
            model = model.merge_and_unload()
        save_model_folder(stage.output_dir, model, stage.tokenizer)
        from . import report

        counts = model.parameter_counts()
        report.append(stage.output_dir.parent, STAGES[r.stage].train_section,
                      {"steps": summary["step"], "final_loss": summary["loss"], "val_bpb": summary["val_bpb"],
                       "min_val_bpb": summary["min_val_bpb"], "parameters": counts["total"],
                       "tokens": stage.plan.total_tokens, "tokens_per_s": summary["tokens_per_s"],
                       "train_time_s": summary["train_time_s"], "flops_per_token": stage.plan.flops_per_token,
                       "depth": model.config.num_hidden_layers, "width": model.config.hidden_size,
                       "world_size": acc.num_processes, "peak_flops": stage.peak_flops_source,
                       "lora_r": r.lora_r}
                      | {k: summary["data"][k] for k in ("packing", "cropped_fraction") if k in summary["data"]})
    acc.wait_for_everyone()
    return stage.output_dir


def run(recipe: TrainRecipe) -> dict:
    """Prepare, train and finalize one stage; returns the training summary (plus `output_dir`)."""
    stage = prepare_stage(recipe)
    summary = train(stage)
    out = finalize(stage, summary)
    if recipe.tracker != "none":
        stage.accelerator.end_training()
    summary["output_dir"] = str(out) if out else None
    if stage.accelerator.is_main_process:
        logger.info("done: step %d, loss %.4f, val bpb %s%s", summary["step"], summary["loss"], summary["val_bpb"],
                    f", model saved to {out}" if out else "")
    return summary


def configure_logging() -> None:
    """Log lines with timestamps on the main process only (scripts call this first)."""
    level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
