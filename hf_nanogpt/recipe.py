"""Recipes: dataclass defaults < YAML recipe < `--key=value` overrides, validated at start.

    python scripts/pretrain.py recipes/tiny.yaml --depth=6 --num_iterations=200

Unknown keys and values of the wrong type fail before anything runs, with the file, the key, the
expected type and the list of valid keys. Values that follow from others (model width from depth,
gradient accumulation from the total batch size, the number of steps from the training horizon)
are derived in one place, `hf_nanogpt.planning.derive_plan()`, logged, and the resolved recipe is written next to
the checkpoints (`recipe.yaml`).

Training horizon precedence (first one set wins): `num_iterations` > `target_flops` >
`target_param_data_ratio` (tokens = ratio x the block matrices and LM head, nanochat master's
scaling-law count, default 12). For SFT and mid-training with a finite dataset, `num_epochs` may set
it instead. With `hyperparameter_transfer: nanochat` the batch size, every lr and the Muon weight
decay are transferred from nanochat's d12 reference (`derive_plan`).
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

UNSET = -1  # "not set" for numeric recipe keys
# Keys of earlier releases, named in the error a recipe that still uses them gets.
RENAMED_KEYS = {
    "warmup_ratio": "replaced by warmup_steps, a number of steps as in nanochat master",
    "muon_momentum": "renamed muon_momentum_end",
    "adam_beta1": "the AdamW betas are per group now, see the table in hf_nanogpt/optim.py (optimizer=adamw: "
                  "adamw_betas)",
    "adam_beta2": "the AdamW betas are per group now, see the table in hf_nanogpt/optim.py (optimizer=adamw: "
                  "adamw_betas)",
}


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
    n_kv_head: int = _f(UNSET, "key/value heads for grouped-query attention; -1 = as many as query heads")
    window_pattern: str | None = _f(None, "layer pattern such as SSSL or MMML (S = window, L = full, M = Mamba-2); "
                                          "None = the preset's (nanochat: SSSL)")
    sliding_window: int = _f(UNSET, "window of the S layers in tokens, the current one included; -1 = the "
                                     "preset's rule (nanochat: ceil(T/4/128)*128 + 1)")
    model_preset: Literal["nanochat", "nanochat_jan2026", "gpt2"] = _f(
        "nanochat", "architecture family: nanochat master, its January-2026 layout, or nanoGPT's GPT-2")
    model_config: dict = _f({}, "extra NanoGPTConfig fields, e.g. {dropout: 0.1} (JSON on the command line)")
    vocab_size: int = _f(UNSET, "tokens of the tokenizer the recipe expects (checked at start; lets --plan_only "
                                 "size the model without it); -1 = whatever the tokenizer has")
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
    total_batch_size: int = _f(UNSET, "tokens per optimizer step; -1 = nanochat's Power Lines batch with "
                                       "hyperparameter_transfer=nanochat, else device_batch_size * max_seq_len * world")
    # --- training horizon (precedence: num_iterations > target_flops > target_param_data_ratio)
    num_iterations: int = _f(UNSET, "optimizer steps; -1 = derive from target_flops or target_param_data_ratio")
    target_flops: float = _f(-1.0, "train for this many FLOPs; -1 = unused")
    target_param_data_ratio: float = _f(12.0, "tokens per scaling parameter (block matrices + LM head; nanochat "
                                              "master: 12, Chinchilla ~20); -1 = unused")
    num_epochs: float = _f(-1.0, "mid/sft: passes over the mixture (used when num_iterations = -1); -1 = unused")
    # --- optimizer (nanochat master; see hf_nanogpt/optim.py for the group table)
    optimizer: Literal["muon", "adamw"] = _f(
        "muon", "muon = Muon for the block matrices + AdamW for the rest (nanochat); adamw = AdamW for all, weight "
        "decay on every 2-D tensor (nanoGPT)")
    adamw_betas: list = _f([0.9, 0.95], "optimizer=adamw: the betas of every group (nanoGPT; its Shakespeare config: "
                                        "[0.9, 0.99]); optimizer=muon uses the per-group table of optim.py")
    muon_variant: Literal["nanochat", "keller"] = _f(
        "nanochat", "Muon rule: nanochat = nanochat master (MuonEq, Polar Express, Muon+, NorMuon, cautious weight "
        "decay); keller = Keller Jordan's Muon (= torch.optim.Muon)")
    muon_ns_dtype: Literal["auto", "bfloat16", "float32"] = _f(
        "auto", "precision of Muon's orthogonalisation: auto = bfloat16 (nanochat's) on GPUs and on CPUs with "
        "native bf16 matmuls (AVX512-BF16, AMX), float32 elsewhere; float32 reproduces nanochat's fp32 golden steps")
    embedding_lr: float = _f(0.3, "AdamW lr of the token (and position) embeddings; value embeddings get half")
    unembedding_lr: float = _f(0.008, "AdamW lr of the LM head")
    matrix_lr: float = _f(0.02, "Muon lr of the 2-D matrices inside the blocks (x max(1, rows/cols)^0.5 each)")
    scalar_lr: float = _f(0.5, "AdamW lr of the x0 scalars (resid_lambdas, norm weights and biases: x 0.01)")
    weight_decay: float = _f(0.28, "Muon weight decay at the d12 reference (scaled by hyperparameter_transfer)")
    weight_decay_schedule: Literal["cosine", "constant"] = _f(
        "cosine", "Muon weight decay over the run: cosine from weight_decay to 0 (nanochat), or constant")
    muon_momentum_start: float = _f(0.85, "Muon momentum at step 0")
    muon_momentum_end: float = _f(0.97, "Muon momentum after the warmup")
    muon_momentum_warmup_steps: int = _f(400, "steps of linear Muon momentum warmup (start -> end)")
    muon_momentum_warmdown: float = _f(0.90, "Muon momentum at the last step, reached linearly across the "
                                             "warmdown_ratio part of the run; = muon_momentum_end keeps it flat")
    grad_clip: float = _f(0.0, "gradient clipping threshold (norm); 0 = no clipping (nanochat)")
    grad_clip_mode: Literal["global", "per_param", "per_layer"] = _f(
        "global", "what one norm covers: all gradients, each parameter tensor, or each block (per_layer)")
    lookahead_k: int = _f(0, "Lookahead (Zhang et al. 2019) around the whole optimizer: sync every k steps; 0 = off")
    lookahead_alpha: float = _f(0.5, "Lookahead: fraction of the way the slow weights move to the fast ones")
    hyperparameter_transfer: Literal["none", "nanochat"] = _f(
        "none", "nanochat = transfer from the d12 reference (pretraining): total_batch_size -1 -> Power Lines "
        "batch, every lr x sqrt(B/2^19), weight_decay x sqrt(B/2^19) x D_ref/D; none = the recipe values as written")
    init_lr_frac: float = _f(1.0, "scale every peak lr by this (nanochat master SFT: 0.8)")
    lrs_from_init: bool = _f(False, "mid/sft: take the four lrs (embedding, unembedding, matrix, scalar) from the "
                                    "init_from run's recipe.yaml (nanochat master's SFT)")
    # --- loss terms (hf_nanogpt.loss_nanogpt.LOSS_TERMS), added to the cross-entropy and logged apart
    z_loss_coef: float = _f(0.0, "coefficient of PaLM's z-loss, mean log(Z)^2 of the softmax (PaLM: 1e-4); 0 = off")
    label_smoothing: float = _f(0.0, "label smoothing epsilon (as F.cross_entropy's); 0 = off")
    loss_terms: dict = _f({}, "other terms of loss_nanogpt.LOSS_TERMS with their coefficients, e.g. {my_term: 0.01}")
    # --- LoRA (SFT through PEFT)
    lora_r: int = _f(0, "LoRA rank; 0 = full fine-tuning")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    lora_lr: float = _f(1e-3, "AdamW lr of the LoRA adapters")
    # --- lr schedule (hf_nanogpt/schedules.py)
    lr_schedule: Literal["wsd", "cosine", "step", "constant"] = _f(
        "wsd", "wsd = nanochat's warmup / constant / linear warmdown; cosine; step (step_milestones/step_factors); "
        "constant (after warmup)")
    warmup_steps: int = _f(40, "steps of linear lr warmup (nanochat master: 40)")
    warmdown_ratio: float = _f(0.65, "fraction of final steps of linear lr warmdown (wsd) and of Muon momentum "
                                     "warmdown")
    final_lr_frac: float = _f(0.05, "lr at the end as a fraction of the peak (wsd, cosine)")
    step_milestones: list = _f([], "lr_schedule=step: increasing fractions of the run, e.g. [0.5, 0.8]")
    step_factors: list = _f([], "lr_schedule=step: the lr multiplier from each milestone on, e.g. [0.5, 0.1]")
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
    plan_only: bool = _f(False, "print the resolved recipe and derived plan as JSON and exit (reads no data)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = _f(
        "auto", "autocast dtype: auto = bfloat16 on GPUs that support it and on CPUs with native bf16 matmuls "
        "(AVX512-BF16, AMX: ~2x the float32 speed there), float32 elsewhere")
    compile: bool = _f(False, "torch.compile the model")
    seed: int = _f(42, "random seed (model init, data order, dropout)")
    tracker: Literal["none", "wandb", "tensorboard"] = _f("none", "experiment tracker through accelerate")
    nan_policy: Literal["stop", "skip"] = _f(
        "stop", "non-finite loss: stop (keep the last good checkpoint) or skip the step (stop after 10 in a row)")
    max_steps_per_run: int = _f(UNSET, "stop after this many steps in this process (for tests / preemption)")

    def validate(self) -> None:
        """Raise `ValueError` naming the key for values that no derivation can fix: each key's range
        (`RANGES`), then the rules that tie keys together."""
        for keys, ok, expected in RANGES:
            for key in keys:
                if not ok(getattr(self, key)):
                    raise ValueError(f"recipe key {key}={getattr(self, key)!r} is invalid: expected {expected}")
        self._check_consistency()
        check_model_config(self.model_config)

    def _check_consistency(self) -> None:
        """Rules across keys: stages, the step schedule, the transfer, the curriculum, the loss terms."""
        if self.stage != "base" and not self.mixture:
            raise ValueError(f"recipe key mixture is empty: stage {self.stage!r} trains on a chat task mixture")
        if self.stage != "base" and self.init_from is None:
            raise ValueError(f"recipe key init_from is unset: stage {self.stage!r} starts from an earlier checkpoint")
        saves = self.save_every > 0 or self.max_steps_per_run > 0
        if saves and self.keep_checkpoints < 1:  # keeping none would delete the checkpoint `latest` names
            raise ValueError(f"recipe key keep_checkpoints={self.keep_checkpoints!r} is invalid: expected >= 1 when "
                             "checkpoints are saved (save_every or max_steps_per_run is set)")
        milestones, factors = self.step_milestones, self.step_factors
        if self.lr_schedule == "step" or milestones or factors:
            if self.lr_schedule != "step":
                raise ValueError(f"recipe keys step_milestones/step_factors are set but lr_schedule="
                                 f"{self.lr_schedule!r}: they only apply to lr_schedule=step")
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in milestones + factors)
            if not milestones or len(milestones) != len(factors) or not numbers:
                raise ValueError(f"recipe keys step_milestones={milestones!r} and step_factors={factors!r} are "
                                 "invalid: expected two lists of numbers of the same length, e.g. [0.5, 0.8] and "
                                 "[0.5, 0.1]")
            if any(not 0.0 < m < 1.0 for m in milestones) or list(milestones) != sorted(set(milestones)):
                raise ValueError(f"recipe key step_milestones={milestones!r} is invalid: expected increasing "
                                 "fractions of the run in (0, 1)")
            if any(f < 0 for f in factors):
                raise ValueError(f"recipe key step_factors={factors!r} is invalid: expected multipliers >= 0")
        if self.hyperparameter_transfer == "nanochat":
            if self.stage != "base":
                raise ValueError(f"recipe key hyperparameter_transfer=nanochat applies to pretraining (stage base), "
                                 f"not stage {self.stage!r}: later stages inherit the base run's values")
            if self.target_param_data_ratio <= 0:
                raise ValueError("recipe key hyperparameter_transfer=nanochat needs target_param_data_ratio > 0: the "
                                 "transfer's data horizon D is target_param_data_ratio x the scaling parameters")
        if self.lrs_from_init and self.stage == "base":
            raise ValueError("recipe key lrs_from_init=true applies to mid/sft (it reads the init_from run's lrs), "
                             "not to pretraining")
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
        betas = self.adamw_betas
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"recipe key adamw_betas={betas!r} is invalid: expected two values in [0, 1), e.g. "
                             "[0.9, 0.95]")
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


# Each key's range: (keys, test, what the error says is expected). Values that parse and type-check but
# would fail late (at the first evaluation, at the end of the run) or silently do something else.
RANGES: list[tuple[tuple[str, ...], typing.Callable[[Any], bool], str]] = [
    (("depth", "aspect_ratio", "head_dim", "max_seq_len", "device_batch_size", "log_every", "eval_tokens",
      "lora_alpha"), lambda v: v > 0, "a positive integer"),
    (("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr", "lora_lr", "init_lr_frac", "weight_decay",
      "grad_clip", "z_loss_coef", "lora_r"), lambda v: v >= 0, ">= 0"),
    (("warmup_steps", "muon_momentum_warmup_steps", "lookahead_k", "seq_len_warmup_steps"), lambda v: v >= 0,
     "an integer >= 0"),
    (("warmdown_ratio", "final_lr_frac"), lambda v: 0.0 <= v <= 1.0, "a value in [0, 1]"),
    (("muon_momentum_start", "muon_momentum_end", "muon_momentum_warmdown", "label_smoothing", "lora_dropout"),
     lambda v: 0.0 <= v < 1.0, "a value in [0, 1)"),
    (("lookahead_alpha",), lambda v: 0.0 < v <= 1.0, "a value in (0, 1]"),
    # 0 would mean "every 0 steps" or "no batch": nothing sensible
    (("eval_every", "save_every", "core_metric_every", "sample_every"), lambda v: v > 0 or v == -1,
     "a positive integer, or -1 (never)"),
    (("num_iterations", "max_steps_per_run", "total_batch_size", "core_metric_max_per_task", "n_kv_head",
      "sliding_window"), lambda v: v > 0 or v == -1, "a positive integer, or -1 (unset)"),
    (("target_flops", "target_param_data_ratio", "num_epochs"), lambda v: v > 0 or v == -1,
     "a positive number, or -1 (unused)"),
]


def model_config_fields() -> set[str]:
    """Names a recipe's `model_config` may set: `NanoGPTConfig`'s fields and its nanoGPT aliases."""
    from .configuration_nanogpt import NanoGPTConfig

    if dataclasses.is_dataclass(NanoGPTConfig):  # PreTrainedConfig is a dataclass in transformers 5.x
        names = {f.name for f in dataclasses.fields(NanoGPTConfig)}
    else:
        import inspect

        names = set(inspect.signature(NanoGPTConfig.__init__).parameters) - {"self", "kwargs"}
    return names | set(NanoGPTConfig.attribute_map)


def check_model_config(model_config: dict) -> None:
    """Refuse unknown `model_config` keys (a typo such as `droput` would otherwise land silently in
    config.json), naming the key and the closest valid names."""
    import difflib

    valid = model_config_fields()
    for key in model_config:
        if key not in valid:
            close = difflib.get_close_matches(str(key), sorted(valid), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"recipe key model_config has an unknown field {key!r}{hint} "
                             f"(NanoGPTConfig fields: {', '.join(sorted(valid))})")


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
            hint = f" ({RENAMED_KEYS[key]})" if key in RENAMED_KEYS else ""
            raise ValueError(f"recipe file {path}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")
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
        hints = "".join(f" ({RENAMED_KEYS[k]})" for k in (u.lstrip("-").split("=")[0] for u in unknown)
                        if k in RENAMED_KEYS)
        parser.error(f"unknown argument(s) {' '.join(unknown)}{hints}; valid keys: {valid}")
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


INHERITED_LRS = ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr")


def inherit_learning_rates(recipe: TrainRecipe, folder: str | os.PathLike) -> TrainRecipe:
    """`recipe` with the four lrs of the run that wrote `folder` (its `recipe.yaml`), for `lrs_from_init`.

    nanochat master's SFT starts from the base run's lrs as that run was configured (before its own
    batch-size transfer) and scales them by `init_lr_frac`.
    """
    path = Path(folder) / "recipe.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"recipe key lrs_from_init=true but {path} does not exist (the init_from folder was "
                                f"not written by this project's training): set {', '.join(INHERITED_LRS)} explicitly")
    saved = (yaml.safe_load(path.read_text()) or {}).get("recipe", {})
    missing = [k for k in INHERITED_LRS if not isinstance(saved.get(k), (int, float))]
    if missing:
        raise ValueError(f"{path}: lrs_from_init=true but the saved recipe has no {', '.join(missing)}")
    return dataclasses.replace(recipe, **{k: float(saved[k]) for k in INHERITED_LRS})


# ----------------------------------------------------------------------------- derivations


# nanochat's reference point for hyperparameter transfer: the lrs and weight decay were tuned on d12 at
# B_ref = 2^19 tokens per step and D_ref = target_param_data_ratio x d12's scaling parameters.
