"""From nanoGPT: a `config/*.py` training config -> a recipe YAML for `scripts/pretrain.py`.

    python scripts/convert_nanogpt_config.py config/train_shakespeare_char.py > recipes/my-shakespeare.yaml

The file is never executed. nanoGPT's configs are Python files of top-level assignments that override
the globals of its `train.py`; each `name = <literal>` is read with `ast.literal_eval`. Anything else
(imports, expressions such as `'run' + str(time.time())`, `if` blocks) is listed as not read.
Keys the file does not set take nanoGPT's `train.py` defaults (they differ from this project's:
nanoGPT's `bias` is False, its batch 12 x 1024 x 40 accumulation steps), so the recipe describes the
run nanoGPT would have made.

How keys map (a key can only map where the meaning is the same; the rest is listed as not mapped):

| nanoGPT                               | recipe                                                       |
|---------------------------------------|--------------------------------------------------------------|
| n_layer, n_embd, n_head               | depth, aspect_ratio = n_embd / n_layer, head_dim = n_embd / n_head (hidden_size in model_config when not a whole aspect ratio) |
| block_size, batch_size                | max_seq_len, device_batch_size                               |
| gradient_accumulation_steps           | total_batch_size = steps x batch_size x block_size (nanoGPT's count is global) |
| max_iters                             | num_iterations                                               |
| learning_rate                         | embedding_lr, unembedding_lr, scalar_lr: the AdamW groups, undoing this project's width scaling so the effective rate is nanoGPT's; the block matrices train with Muon (matrix_lr keeps its default: an AdamW rate is not a Muon rate) |
| decay_lr, warmup_iters, min_lr        | lr_schedule cosine / constant, warmup_steps, final_lr_frac   |
| weight_decay, grad_clip               | weight_decay (Muon matrices, weight_decay_schedule constant as nanoGPT's), grad_clip |
| beta1, beta2                          | not mapped: the AdamW betas are fixed per group (nanochat master's table in hf_nanogpt/optim.py) |
| dropout, bias                         | model_config {dropout, bias}; hidden_act gelu (nanoGPT's GELU is exact) |
| dataset                               | train_data / val_data (shakespeare_char, shakespeare: the shared tinyshakespeare; others: data/<dataset>/input.txt) |
| out_dir, eval_interval, eval_iters, log_interval | output_dir, eval_every, eval_tokens = eval_iters x batch_size x block_size, log_every |
| init_from = 'resume'                  | resume_from: latest                                          |
| dtype, compile, wandb_log, wandb_run_name | dtype, compile, tracker: wandb, run_name                 |
"""

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# nanoGPT train.py's defaults (the values a config file overrides).
NANOGPT_DEFAULTS = {
    "out_dir": "out", "eval_interval": 2000, "log_interval": 1, "eval_iters": 200, "eval_only": False,
    "always_save_checkpoint": True, "init_from": "scratch", "wandb_log": False, "wandb_project": "owt",
    "wandb_run_name": "gpt2", "dataset": "openwebtext", "gradient_accumulation_steps": 40, "batch_size": 12,
    "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768, "dropout": 0.0, "bias": False,
    "learning_rate": 6e-4, "max_iters": 600000, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
    "decay_lr": True, "warmup_iters": 2000, "lr_decay_iters": 600000, "min_lr": 6e-5, "backend": "nccl",
    "device": "cuda", "dtype": "bfloat16", "compile": True,
}
# nanoGPT keys with no recipe counterpart, and why.
NOT_MAPPED = {
    "eval_only": "run scripts/base_eval.py instead",
    "always_save_checkpoint": "checkpoints follow save_every; the final model is always saved",
    "wandb_project": "accelerate's tracker takes the project from its own config",
    "backend": "accelerate picks the process-group backend",
    "device": "accelerate picks the device (accelerate launch --cpu for CPU)",
}
SHAKESPEARE = "../shared/data/corpus/tinyshakespeare.txt"


def read_nanogpt_config(text: str, name: str = "config") -> tuple[dict, list[str]]:
    """(literal top-level assignments, statements not read as `name:line: why`), without executing anything."""
    try:
        tree = ast.parse(text, filename=name)
    except SyntaxError as err:
        raise ValueError(f"{name}:{err.lineno}: not valid Python ({err.msg})") from None
    values, skipped = {}, []
    for node in tree.body:
        where = f"{name}:{node.lineno}"
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            key = node.targets[0].id
            try:
                values[key] = ast.literal_eval(node.value)
            except ValueError:
                skipped.append(f"{where}: {key} = {ast.unparse(node.value)} (not a literal: not evaluated)")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or bare string
        else:
            skipped.append(f"{where}: {ast.unparse(node).splitlines()[0]} (not a top-level assignment)")
    return values, skipped


def _data_specs(dataset: str) -> tuple[str, str, str, int]:
    """(train_data, val_data, note, tokenizer vocab_size) for a nanoGPT dataset name."""
    if dataset in ("shakespeare_char", "shakespeare"):
        return (f"{SHAKESPEARE}[:90%]", f"{SHAKESPEARE}[90%:]", f"nanoGPT's {dataset} split (90% / 10%)",
                265 if dataset == "shakespeare_char" else 50257)
    if dataset == "openwebtext":
        return ("hf:Skylion007/openwebtext", "hf:Skylion007/openwebtext",
                "the hub dataset nanoGPT prepares (it has only a train split: set val_data to a held-out slice)", 50257)
    return (f"data/{dataset}/input.txt[:90%]", f"data/{dataset}/input.txt[90%:]",
            f"nanoGPT reads data/{dataset}/train.bin; point this at the raw text it was prepared from", 50257)


@dataclass
class ConvertedConfig:
    """A converted nanoGPT config: the recipe, where each value came from, what was not mapped, and the
    commands to run first (the tokenizer)."""

    recipe: dict
    sources: dict[str, str]
    not_mapped: list[str]
    commands: list[str] = field(default_factory=list)

    def to_yaml(self, source: str) -> str:
        """The recipe as YAML, one key per line with where its value came from, then what was not mapped."""
        lines = [f"# Converted from the nanoGPT config {source} by scripts/convert_nanogpt_config.py.",
                 "# Check the data paths, make the tokenizer, then train:"]
        lines += [f"#   {c}" for c in self.commands] + [f"#   python scripts/pretrain.py {Path(source).stem}.yaml"]
        for key, value in self.recipe.items():
            text = yaml.safe_dump({key: value}, default_flow_style=True, width=1000).strip()[1:-1]  # "{k: v}" -> "k: v"
            lines.append(f"{text}  # {self.sources[key]}")
        if self.not_mapped:
            lines += ["", "# Not mapped:"] + [f"#   {n}" for n in self.not_mapped]
        return "\n".join(lines) + "\n"


def convert_nanogpt_config(text: str, name: str = "config") -> ConvertedConfig:
    """Map the nanoGPT config `text` (file name `name`, for messages) onto recipe keys."""
    given, notes = read_nanogpt_config(text, name)
    unknown = sorted(set(given) - set(NANOGPT_DEFAULTS))
    notes += [f"{k} = {given[k]!r} (not a nanoGPT train.py setting)" for k in unknown]
    c = {**NANOGPT_DEFAULTS, **{k: v for k, v in given.items() if k in NANOGPT_DEFAULTS}}

    def src(*keys):
        return ", ".join(f"{k}={c[k]!r}" + ("" if k in given else " (nanoGPT default)") for k in keys)

    recipe, why = {"stage": "base", "model_preset": "gpt2"}, {"stage": "nanoGPT trains from scratch",
                                                               "model_preset": "nanoGPT's GPT-2 architecture"}

    def put(key, value, reason):
        recipe[key], why[key] = value, reason

    n_layer, n_head, n_embd, T, B = c["n_layer"], c["n_head"], c["n_embd"], c["block_size"], c["batch_size"]
    if n_embd % n_head:
        raise ValueError(f"{name}: n_embd={n_embd} is not divisible by n_head={n_head}")
    if "wandb_run_name" in given:
        put("run_name", c["wandb_run_name"], src("wandb_run_name"))
    # nanoGPT's out_dir holds ckpt.pt; here a run folder holds the tokenizer and one folder per stage
    put("output_dir", f"{c['out_dir']}/base", src("out_dir") + ": the run folder; base = this stage")
    put("tokenizer", f"{c['out_dir']}/tokenizer", "made by the tok_train.py command in the header")
    put("depth", n_layer, src("n_layer"))
    put("head_dim", n_embd // n_head, src("n_embd", "n_head"))
    model_config = {"dropout": float(c["dropout"]), "bias": bool(c["bias"]), "hidden_act": "gelu"}
    if n_embd % n_layer == 0:
        put("aspect_ratio", n_embd // n_layer, src("n_embd", "n_layer") + f": width {n_embd}")
    else:  # the width is not depth x a whole aspect ratio: give it to the model directly
        model_config.update(hidden_size=n_embd, num_attention_heads=n_head)
    put("model_config", model_config, src("dropout", "bias") + "; nanoGPT's GELU is the exact one")
    put("max_seq_len", T, src("block_size"))
    put("device_batch_size", B, src("batch_size"))
    put("total_batch_size", c["gradient_accumulation_steps"] * B * T,
        src("gradient_accumulation_steps", "batch_size", "block_size") + ": tokens per optimizer step")
    train, val, note, vocab = _data_specs(c["dataset"])
    # character-level = byte-level BPE without merges (256 bytes + 9 control tokens) for ASCII text
    commands = [f"python scripts/tok_train.py --data '{train}' --vocab_size {vocab} --output_dir {c['out_dir']}/tokenizer"]
    put("train_data", train, src("dataset") + f": {note}")
    put("val_data", val, src("dataset"))
    put("num_iterations", c["max_iters"], src("max_iters"))
    # AdamW groups: build_optimizer multiplies embedding/head lrs by (width/768)^-0.5 and scalar lrs by 0.01.
    lr = c["learning_rate"]
    put("embedding_lr", lr * math.sqrt(n_embd / 768), src("learning_rate") + f" x sqrt({n_embd}/768): effective {lr:g}")
    put("unembedding_lr", lr * math.sqrt(n_embd / 768), src("learning_rate") + " (the head is tied to the embedding)")
    put("scalar_lr", lr * 100, src("learning_rate") + " x 100 (the scalar group runs at scalar_lr x 0.01)")
    notes.append(f"learning_rate={lr!r} is not applied to the block matrices: they train with Muon at matrix_lr "
                 "(kept at its default, 0.02); nanoGPT trains them with AdamW")
    put("weight_decay", c["weight_decay"], src("weight_decay") + ": decoupled decay of the Muon matrices")
    put("weight_decay_schedule", "constant", "nanoGPT's weight decay does not follow a schedule")
    if "beta1" in given or "beta2" in given:
        notes.append(f"beta1={c['beta1']!r}, beta2={c['beta2']!r}: the AdamW betas are fixed per parameter group "
                     "(nanochat master's table in hf_nanogpt/optim.py), not recipe keys")
    put("grad_clip", c["grad_clip"], src("grad_clip"))
    if c["decay_lr"]:
        put("lr_schedule", "cosine", src("decay_lr"))
        put("warmup_steps", min(c["warmup_iters"], c["max_iters"]), src("warmup_iters", "max_iters"))
        put("final_lr_frac", c["min_lr"] / lr if lr else 0.0, src("min_lr", "learning_rate"))
        put("warmdown_ratio", 0.0, "cosine decay has no separate warmdown")
        if c["lr_decay_iters"] != c["max_iters"]:
            notes.append(f"lr_decay_iters={c['lr_decay_iters']} != max_iters={c['max_iters']}: the cosine here "
                         "decays over the whole run")
    else:
        put("lr_schedule", "constant", src("decay_lr"))
        put("warmup_steps", min(c["warmup_iters"], c["max_iters"]), src("warmup_iters", "max_iters"))
    put("eval_every", c["eval_interval"], src("eval_interval"))
    put("eval_tokens", c["eval_iters"] * B * T, src("eval_iters", "batch_size", "block_size") + ": tokens per evaluation")
    put("log_every", c["log_interval"], src("log_interval"))
    # nanoGPT autocasts only on GPUs; its default dtype is "bf16 if supported, else fp16": that is our auto
    explicit = "dtype" in given and c["dtype"] in ("bfloat16", "float16", "float32")
    put("dtype", c["dtype"] if explicit else "auto", src("dtype") if explicit else "auto: bfloat16 on GPUs, float32 on CPU")
    put("compile", bool(c["compile"]), src("compile"))
    if c["wandb_log"]:
        put("tracker", "wandb", src("wandb_log"))
    if c["init_from"] == "resume":
        put("resume_from", "latest", src("init_from"))
    elif c["init_from"] != "scratch":
        notes.append(f"init_from={c['init_from']!r}: start from converted weights instead "
                     "(scripts/convert_nanogpt.py, then init_from in a mid/sft recipe)")
    notes += [f"{k} = {c[k]!r} ({reason})" for k, reason in NOT_MAPPED.items() if k in given]
    return ConvertedConfig(recipe, why, notes, commands)


__all__ = ["NANOGPT_DEFAULTS", "ConvertedConfig", "convert_nanogpt_config", "read_nanogpt_config"]
