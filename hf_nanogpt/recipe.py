"""Recipes: dataclass defaults < YAML recipe < `--key=value` overrides, validated at start.

    python scripts/pretrain.py recipes/tiny.yaml --depth=6 --num_iterations=200

Unknown keys and values of the wrong type fail before anything runs, with the file, the key, the
expected type and the list of valid keys. Values that follow from others (model width from depth,
gradient accumulation from the total batch size, the number of steps from the training horizon)
are derived in one place, `derive_plan()`, logged, and the resolved recipe is written next to
the checkpoints (`recipe.yaml`).

Training horizon precedence (first one set wins): `num_iterations` > `target_flops` >
`target_param_data_ratio` (tokens = ratio x parameters that do matmuls; nanochat's Chinchilla-style
default of 20). For SFT and mid-training with a finite dataset, `num_epochs` may set it instead.
"""

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .stages import LEGACY_STAGE_NAMES, STAGES, stage_info

_UNSET = -1


def _f(default, help: str, **kw):
    """A dataclass field with its `--help` text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainRecipe:
    """Every knob of a training stage (pretraining, mid-training or SFT). `-1` means "derive it"."""

    # --- stage and I/O
    stage: Literal["base", "mid", "sft"] = _f("base", "which stage this recipe trains (base = pretraining)")
    output_dir: str | None = _f(None, "checkpoint folder; default $HF_NANOGPT_BASE_DIR/<base|mid|sft>")
    tokenizer: str = _f("tokenizer", "tokenizer folder or stage name (resolved in $HF_NANOGPT_BASE_DIR)")
    init_from: str | None = _f(None, "model folder or stage name to start from (mid/sft); None = fresh model")
    run_name: str = _f("run", "name shown by trackers and in the report")
    # --- model (pretraining builds it from these; later stages inherit the checkpoint's config)
    depth: int = _f(4, "number of transformer blocks; width = depth * aspect_ratio rounded to whole heads")
    aspect_ratio: int = _f(64, "model width per layer of depth (nanochat: 64)")
    head_dim: int = _f(128, "width of one attention head")
    max_seq_len: int = _f(2048, "context length in tokens")
    n_kv_head: int = _f(_UNSET, "key/value heads for grouped-query attention; -1 = as many as query heads")
    window_pattern: str | None = _f(None, "sliding-window layer pattern such as SSSL (S = window, L = full)")
    sliding_window: int = _f(_UNSET, "window of the S layers in tokens; -1 = max_seq_len // 2")
    model_preset: Literal["nanochat", "gpt2"] = _f("nanochat", "architecture family (gpt2 = nanoGPT's GPT-2)")
    model_config: dict = _f({}, "extra NanoGPTConfig fields, e.g. {dropout: 0.1} (JSON on the command line)")
    # --- data
    train_data: str = _f("stdlib", "training corpus (pretrain) -- see hf_nanogpt.data.corpus for the syntax")
    val_data: str | None = _f(None, "validation corpus; None = the documented split of train_data")
    mixture: list = _f([], "chat task mixture for mid/sft: list of {task, split, repeat, stop} (JSON on the CLI)")
    val_mixture: list = _f([], "validation task mixture for mid/sft; [] = none")
    sft_packing: Literal["pad", "pack"] = _f("pad", "SFT batching: pad each conversation, or pack several per row")
    packing: Literal["continue", "crop", "stream"] = _f(
        "continue", "pretraining rows: continue = best fit, a document that does not fit continues in later rows "
        "(nothing dropped); crop = nanochat's best fit that crops it; stream = nanoGPT's contiguous stream")
    seq_len_warmup_steps: int = _f(0, "pretraining: steps over which the row length grows linearly from "
                                      "seq_len_start to max_seq_len (same tokens per step, more rows); 0 = off")
    seq_len_start: int = _f(64, "row length at step 0 of the sequence-length warmup (seq_len_warmup_steps > 0)")
    num_proc: int | None = _f(None, "processes for tokenization (datasets.map num_proc)")
    # --- batch sizes
    device_batch_size: int = _f(32, "sequences per device per micro-step")
    total_batch_size: int = _f(_UNSET, "tokens per optimizer step; -1 = device_batch_size * max_seq_len * world")
    # --- training horizon (precedence: num_iterations > target_flops > target_param_data_ratio)
    num_iterations: int = _f(_UNSET, "optimizer steps; -1 = derive from target_flops or target_param_data_ratio")
    target_flops: float = _f(-1.0, "train for this many FLOPs; -1 = unused")
    target_param_data_ratio: float = _f(20.0, "tokens per matmul parameter (Chinchilla ~20); -1 = unused")
    num_epochs: float = _f(-1.0, "mid/sft: passes over the mixture (used when num_iterations = -1); -1 = unused")
    # --- optimizer (Muon for block matrices, AdamW for the rest; AdamW lrs scale with (width/768)^-0.5)
    embedding_lr: float = _f(0.2, "AdamW lr of the token (and position) embeddings")
    unembedding_lr: float = _f(0.004, "AdamW lr of the LM head")
    matrix_lr: float = _f(0.02, "Muon lr of the 2-D matrices inside the blocks")
    scalar_lr: float = _f(0.5, "AdamW lr of scalars and vectors (residual lambdas, norm weights, biases)")
    weight_decay: float = _f(0.0, "decoupled weight decay of the Muon matrices (optimizer adamw: of every 2-D tensor)")
    optimizer: Literal["muon", "adamw"] = _f(
        "muon", "muon = Muon for the block matrices + AdamW for the rest (nanochat); adamw = AdamW for all (nanoGPT)")
    adam_beta1: float = _f(0.8, "AdamW beta1")
    adam_beta2: float = _f(0.95, "AdamW beta2")
    muon_momentum: float = _f(0.95, "Muon momentum after warmup")
    muon_momentum_start: float = _f(0.85, "Muon momentum at step 0")
    muon_momentum_warmup_steps: int = _f(300, "steps of linear Muon momentum warmup")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this value; 0 = no clipping")
    init_lr_frac: float = _f(1.0, "scale every peak lr by this (nanochat: 1.0 for mid-training, 0.02 for SFT)")
    # --- loss terms (hf_nanogpt.loss_nanogpt.LOSS_TERMS), added to the cross-entropy and logged apart
    z_loss_coef: float = _f(0.0, "coefficient of PaLM's z-loss, mean log(Z)^2 of the softmax (PaLM: 1e-4); 0 = off")
    label_smoothing: float = _f(0.0, "label smoothing epsilon (as F.cross_entropy's); 0 = off")
    loss_terms: dict = _f({}, "other terms of loss_nanogpt.LOSS_TERMS with their coefficients, e.g. {my_term: 0.01}")
    # --- LoRA (SFT through PEFT)
    lora_r: int = _f(0, "LoRA rank; 0 = full fine-tuning")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    lora_lr: float = _f(1e-3, "AdamW lr of the LoRA adapters")
    # --- schedule
    lr_schedule: Literal["wsd", "cosine", "constant"] = _f(
        "wsd", "wsd = nanochat's warmup / constant / linear warmdown; cosine; constant (after warmup)")
    warmup_ratio: float = _f(0.0, "fraction of steps of linear lr warmup")
    warmdown_ratio: float = _f(0.2, "fraction of final steps of linear lr warmdown (wsd)")
    final_lr_frac: float = _f(0.0, "lr at the end as a fraction of the peak")
    # --- evaluation, sampling, checkpoints
    eval_every: int = _f(250, "steps between val bits-per-byte evaluations; -1 = only at the end")
    eval_tokens: int = _f(10_485_760, "tokens of validation data per evaluation")
    core_metric_every: int = _f(-1, "steps between CORE evaluations; -1 = never during training")
    core_metric_max_per_task: int = _f(500, "examples per CORE task during training")
    sample_every: int = _f(-1, "steps between printing samples from fixed prompts; -1 = never")
    save_every: int = _f(-1, "steps between checkpoints; -1 = only the final one")
    keep_checkpoints: int = _f(2, "how many step checkpoints to keep (the final model is always kept)")
    resume_from: str | None = _f(None, "checkpoint folder to resume from, or 'latest' in output_dir")
    log_every: int = _f(1, "steps between log lines")
    # --- runtime
    dry_run: bool = _f(False, "train and evaluate but write nothing (no checkpoints, no report)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = _f(
        "auto", "autocast dtype: auto = bfloat16 on GPUs that support it, float32 on CPU")
    compile: bool = _f(False, "torch.compile the model")
    seed: int = _f(42, "random seed (model init, data order, dropout)")
    tracker: Literal["none", "wandb", "tensorboard"] = _f("none", "experiment tracker through accelerate")
    nan_policy: Literal["stop", "skip"] = _f(
        "stop", "non-finite loss: stop (keep the last good checkpoint) or skip the step (stop after 10 in a row)")
    max_steps_per_run: int = _f(_UNSET, "stop after this many steps in this process (for tests / preemption)")

    def validate(self) -> None:
        """Raise `ValueError` naming the key for values that no derivation can fix."""
        positive = ("depth", "aspect_ratio", "head_dim", "max_seq_len", "device_batch_size", "log_every")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"recipe key {key}={getattr(self, key)!r} is invalid: expected a positive integer")
        for key in ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr", "lora_lr", "init_lr_frac"):
            if getattr(self, key) < 0:
                raise ValueError(f"recipe key {key}={getattr(self, key)!r} is invalid: expected >= 0")
        for key in ("warmup_ratio", "warmdown_ratio", "final_lr_frac"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"recipe key {key}={getattr(self, key)!r} is invalid: expected a value in [0, 1]")
        if self.warmup_ratio + self.warmdown_ratio > 1.0:
            raise ValueError(f"recipe keys warmup_ratio={self.warmup_ratio} + warmdown_ratio={self.warmdown_ratio} "
                             "exceed 1: warmup and warmdown would overlap")
        if self.stage != "base" and not self.mixture:
            raise ValueError(f"recipe key mixture is empty: stage {self.stage!r} trains on a chat task mixture")
        if self.stage != "base" and self.init_from is None:
            raise ValueError(f"recipe key init_from is unset: stage {self.stage!r} starts from an earlier checkpoint")
        if self.lora_r < 0:
            raise ValueError(f"recipe key lora_r={self.lora_r} is invalid: expected >= 0")
        self._validate_data_and_loss()

    def _validate_data_and_loss(self) -> None:
        if self.seq_len_warmup_steps < 0:
            raise ValueError(f"recipe key seq_len_warmup_steps={self.seq_len_warmup_steps} is invalid: expected >= 0")
        if self.seq_len_warmup_steps > 0:
            if self.stage != "base":
                raise ValueError(f"recipe key seq_len_warmup_steps={self.seq_len_warmup_steps} is for pretraining "
                                 f"(stage base); stage {self.stage!r} batches whole conversations")
            if not 8 <= self.seq_len_start <= self.max_seq_len:
                raise ValueError(f"recipe key seq_len_start={self.seq_len_start} is invalid: expected a value in "
                                 f"[8, max_seq_len={self.max_seq_len}]")
            if (self.device_batch_size * self.max_seq_len) % 8:
                raise ValueError(f"recipe keys device_batch_size x max_seq_len = {self.device_batch_size} x "
                                 f"{self.max_seq_len} must be a multiple of 8 for the sequence-length warmup")
        if self.z_loss_coef < 0:
            raise ValueError(f"recipe key z_loss_coef={self.z_loss_coef} is invalid: expected >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"recipe key label_smoothing={self.label_smoothing} is invalid: expected a value in [0, 1)")
        from .loss_nanogpt import LOSS_TERMS

        for name, coef in self.loss_terms.items():
            if name in ("z_loss", "label_smoothing"):
                raise ValueError(f"recipe key loss_terms names {name!r}: set it with its own key "
                                 f"({'z_loss_coef' if name == 'z_loss' else 'label_smoothing'})")
            if name not in LOSS_TERMS:
                raise ValueError(f"recipe key loss_terms names an unknown term {name!r}; terms of "
                                 f"hf_nanogpt.loss_nanogpt.LOSS_TERMS: {', '.join(LOSS_TERMS)}")
            if not isinstance(coef, (int, float)) or isinstance(coef, bool):
                raise ValueError(f"recipe key loss_terms: the coefficient of {name!r} is {coef!r}; expected a number")

    def loss_term_coefficients(self) -> dict[str, float]:
        """The extra loss terms with a non-zero coefficient (what the training loop passes to the model)."""
        terms = {"z_loss": self.z_loss_coef, "label_smoothing": self.label_smoothing, **self.loss_terms}
        return {name: float(coef) for name, coef in terms.items() if coef}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- parsing


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a YAML/CLI value fits the annotation `tp` (int is accepted where float is expected)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        tp = origin
    return isinstance(value, tp)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _accepts_float(tp: Any) -> bool:
    return tp is float or any(_accepts_float(a) for a in typing.get_args(tp))


def _normalize(value: Any, tp: Any) -> Any:
    """YAML 1.1 reads `1e18` as a string: turn numeric strings into floats where a float is expected."""
    if isinstance(value, str) and _accepts_float(tp):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _metavar(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin in (typing.Union, types.UnionType):
        return "|".join(_metavar(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp)).upper()


def _coerce_cli(text: str, tp: Any) -> Any:
    """Parse a command-line string as YAML (so 3, 3.0, true, null, [..], {..} all work), then type-check."""
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    value = _normalize(value, tp)
    if _type_ok(value, tp):
        return value
    if _type_ok(text, tp):  # a string field whose value looks like a number, e.g. run_name=123
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not {_describe(tp)}")


def build_arg_parser(cls=TrainRecipe, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one `--key` per dataclass field (its help text, type and default)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="YAML recipe file (keys as below); --key=value overrides it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        parser.add_argument(f"--{f.name}", dest=f.name, default=argparse.SUPPRESS, metavar=_metavar(tp),
                            type=lambda s, tp=tp: _coerce_cli(s, tp),
                            help=f"{f.metadata.get('help', '')} (default: {default!r})")
    return parser


def load_recipe_file(path: str | os.PathLike, cls=TrainRecipe) -> dict[str, Any]:
    """Read and check a YAML recipe: a mapping of known keys to values of the right type."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"recipe file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"recipe file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    if data.get("stage") in LEGACY_STAGE_NAMES:  # recipes written before the stage table (stages.py)
        data["stage"] = LEGACY_STAGE_NAMES[data["stage"]]
    for key, value in list(data.items()):
        if key in hints:
            value = data[key] = _normalize(value, hints[key])
        if key not in hints:
            raise ValueError(f"recipe file {path}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        if not _type_ok(value, hints[key]):
            raise ValueError(f"recipe file {path}: key {key!r} has value {value!r} "
                             f"({type(value).__name__}); expected {_describe(hints[key])}")
    return data


def parse_recipe(argv: list[str] | None = None, cls=TrainRecipe, description: str | None = None,
                 defaults: dict[str, Any] | None = None, stage: str | None = None):
    """`[recipe.yaml] [--key=value ...]` -> a validated `cls` instance.

    `defaults` are stage defaults applied below the YAML file (e.g. `init_from="mid"` for `sft.py`).
    `stage` (a stage script's own stage) is the default of the `stage` key, and a recipe or override
    naming another stage is refused with the script that trains it.
    """
    parser = build_arg_parser(cls, description)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        valid = ", ".join(f.name for f in dataclasses.fields(cls))
        parser.error(f"unknown argument(s) {' '.join(unknown)}; valid keys: {valid}")
    values = dict(defaults or {})
    if args.recipe:
        values.update(load_recipe_file(args.recipe, cls))
    values.update({k: v for k, v in vars(args).items() if k != "recipe"})
    if stage is not None:
        asked = values.setdefault("stage", stage)
        if asked != stage:
            source = args.recipe or "the command line"
            raise ValueError(f"{source} is a recipe of stage {asked!r}, but {STAGES[stage].script} trains stage "
                             f"{stage!r}: run python {stage_info(asked).script} {args.recipe or ''}".rstrip())
    recipe = cls(**values)
    recipe.validate()
    return recipe


def save_recipe(recipe, path: str | os.PathLike, derived: dict[str, Any] | None = None) -> None:
    """Write the resolved recipe (and the derived values, as comments-free extra section) as YAML."""
    data = {"recipe": dataclasses.asdict(recipe)}
    if derived:
        data["derived"] = json.loads(json.dumps(derived, default=str))
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


# ----------------------------------------------------------------------------- derivations


@dataclass
class TrainingPlan:
    """Values derived from a recipe, the model and the launch (logged and saved with the recipe)."""

    world_size: int
    tokens_per_micro_step: int  # device_batch_size * max_seq_len * world_size
    total_batch_size: int  # tokens per optimizer step
    grad_accum_steps: int
    num_iterations: int
    horizon_source: str  # which recipe key set num_iterations
    total_tokens: int
    flops_per_token: int
    total_flops: float


def derive_plan(recipe: TrainRecipe, flops_per_token: int, matmul_params: int, world_size: int = 1,
                tokens_per_epoch: int | None = None) -> TrainingPlan:
    """Derive gradient accumulation and the number of steps (numbered as in the module docstring).

    1. tokens per micro-step = device_batch_size x max_seq_len x world_size;
    2. total_batch_size (-1 = one micro-step) must be a multiple of it: grad_accum = ratio;
    3. steps = num_iterations, else target_flops / (flops_per_token x total_batch_size), else
       target_param_data_ratio x matmul_params / total_batch_size, else num_epochs x tokens_per_epoch
       / total_batch_size.
    """
    micro = recipe.device_batch_size * recipe.max_seq_len * world_size
    total = micro if recipe.total_batch_size == _UNSET else recipe.total_batch_size
    if total <= 0 or total % micro:
        raise ValueError(
            f"recipe key total_batch_size={recipe.total_batch_size} is not a positive multiple of "
            f"device_batch_size x max_seq_len x processes = {recipe.device_batch_size} x {recipe.max_seq_len} x "
            f"{world_size} = {micro}: lower device_batch_size or pick a multiple of {micro}")
    if recipe.num_iterations > 0:
        steps, source = recipe.num_iterations, "num_iterations"
    elif recipe.target_flops > 0:
        steps, source = round(recipe.target_flops / (flops_per_token * total)), "target_flops"
    elif recipe.stage == "base" and recipe.target_param_data_ratio > 0:
        steps, source = round(recipe.target_param_data_ratio * matmul_params / total), "target_param_data_ratio"
    elif recipe.num_epochs > 0 and tokens_per_epoch:
        steps, source = round(recipe.num_epochs * tokens_per_epoch / total), "num_epochs"
    else:
        raise ValueError("recipe sets no training horizon: set num_iterations, target_flops, "
                         "target_param_data_ratio (pretraining) or num_epochs (mid/sft)")
    steps = max(1, steps)
    return TrainingPlan(world_size=world_size, tokens_per_micro_step=micro, total_batch_size=total,
                        grad_accum_steps=total // micro, num_iterations=steps, horizon_source=source,
                        total_tokens=steps * total, flops_per_token=flops_per_token,
                        total_flops=float(steps) * total * flops_per_token)
