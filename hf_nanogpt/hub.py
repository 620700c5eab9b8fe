"""Publishing a model folder on the Hugging Face Hub: a generated model card and one upload commit.

    python scripts/push_to_hub.py out/sft me/nanochat-d20                 # card metrics from out/report/
    python scripts/push_to_hub.py out/base me/nanochat-d20-base --private
    python scripts/push_to_hub.py out/sft me/nanochat-d20 --revision v2 --run_dir runs/d20

What is uploaded: the top-level files of the folder (weights, `config.json` with its `auto_map`, the
remote code `modeling_nanogpt.py` / `configuration_nanogpt.py`, tokenizer files and chat template,
`generation_config.json`, `recipe.yaml`, `train_log.jsonl`) plus a generated `README.md`. Sub-folders
(`checkpoints/` with optimizer state, the LoRA `adapter/` whose config points at a local base folder)
stay local. Everything goes up in a single commit through `HfApi.create_repo` + `HfApi.upload_folder`,
so a failed upload leaves the repository as it was.

The model card (`build_model_card`) holds:

- YAML front matter the Hub indexes: `library_name: transformers`, `pipeline_tag: text-generation`,
  `license`, tags `nanogpt`, `nanochat`, `hf_nanogpt`;
- a usage snippet (`trust_remote_code=True`; `apply_chat_template` + `generate` for chat models, plain
  completion for a pretrained base model);
- the architecture (depth, width, heads, parameters counted from the safetensors headers);
- the run's metrics from its report sections (`hf_nanogpt.report`): nanochat's BASE / MID / SFT table
  (CORE, chat evals, ChatCORE) and one row per training stage (steps, tokens, time, val bits per byte);
- the training recipe (`recipe.yaml`, verbatim).

`model.push_to_hub(repo)` works too (the model is a `PreTrainedModel`; remote code is uploaded), but
it writes transformers' generic card and no tokenizer: this module is the complete path.
"""

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import yaml

from .stages import LEGACY_STAGE_NAMES, STAGES

CARD_TAGS = ("nanogpt", "nanochat", "hf_nanogpt")
DEFAULT_LICENSE = "mit"  # nanoGPT and nanochat are MIT-licensed
REQUIRED_FILES = ("config.json", "tokenizer.json")


# ----------------------------------------------------------------------------------------------------
# What a model folder holds


def upload_files(model_dir: str | os.PathLike) -> list[Path]:
    """The files of `model_dir` that are published: its top-level regular files, except hidden ones and a
    `README.md` (replaced by the generated card). Raises `FileNotFoundError` / `ValueError` naming what is
    missing for the folder to load with `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)`
    and `AutoTokenizer.from_pretrained(repo)` on a machine without this package."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "README.md")
    names = {p.name for p in files}
    missing = [n for n in REQUIRED_FILES if n not in names]
    if not any(n.endswith(".safetensors") for n in names):
        missing.append("*.safetensors (weights)")
    if missing:
        raise FileNotFoundError(f"model folder {folder} lacks {', '.join(missing)}: is it a folder written by "
                                "save_pretrained + tokenizer.save_pretrained (a stage folder such as out/sft)?")
    config = read_config(folder)
    auto_map = config.get("auto_map") or {}
    if "AutoModelForCausalLM" not in auto_map:
        raise ValueError(f"{folder / 'config.json'}: no auto_map.AutoModelForCausalLM, so the Hub copy could not "
                         "load without this package; save the model after `import hf_nanogpt` (it registers the "
                         "remote code)")
    for cls, ref in auto_map.items():
        module = ref.split("--")[-1].split(".")[0] + ".py"  # "repo--module.Class" or "module.Class"
        if module not in names:
            raise FileNotFoundError(f"{folder / 'config.json'}: auto_map.{cls} = {ref!r} needs {module}, "
                                    f"which is not in {folder}")
    return files


def read_config(model_dir: str | os.PathLike) -> dict:
    """`config.json` of a model folder as a dict (ValueError naming the file when it is not JSON)."""
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def safetensors_summary(model_dir: str | os.PathLike) -> dict:
    """`{"parameters": n, "dtypes": [...], "bytes": n}` of the weights, read from the safetensors headers
    only (8-byte little-endian header length, then a JSON header): no tensor is loaded. Tied weights are
    stored once, so this is the model's true parameter count."""
    params, dtypes, size = 0, set(), 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            try:
                header = json.loads(f.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: unreadable safetensors header ({e})") from None
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            params += count
            dtypes.add(info["dtype"])
        size += path.stat().st_size
    return {"parameters": params, "dtypes": sorted(dtypes), "bytes": size}


def read_recipe(model_dir: str | os.PathLike) -> dict | None:
    """The folder's `recipe.yaml` (`{"recipe": {...}, "derived": {...}}`), or None when absent."""
    path = Path(model_dir) / "recipe.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("recipe"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'recipe' key (as hf_nanogpt.recipe.save_recipe writes)")
    return data


def model_stage(model_dir: str | os.PathLike, recipe: dict | None = None) -> str | None:
    """`base`, `mid` or `sft` from the recipe (older recipes' `pretrain` = `base`), else from the folder
    name, else None."""
    stage = recipe["recipe"].get("stage") if recipe else None
    stage = LEGACY_STAGE_NAMES.get(stage, stage)
    if stage in STAGES:
        return stage
    name = Path(model_dir).resolve().name
    return name if name in STAGES else None


def default_run_dir(model_dir: str | os.PathLike) -> Path | None:
    """The run folder a stage folder belongs to: its parent when that holds report sections, else None."""
    parent = Path(model_dir).resolve().parent
    return parent if (parent / "report").is_dir() else None


# ----------------------------------------------------------------------------------------------------
# The model card


def _count(n: int | float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))


def _num(value, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def front_matter(license: str = DEFAULT_LICENSE, extra_tags: list[str] | tuple = ()) -> str:
    """The card's YAML header (without the `---` fences), through `huggingface_hub.ModelCardData` so the
    keys and their formatting are the ones the Hub reads."""
    from huggingface_hub import ModelCardData

    tags = list(dict.fromkeys([*CARD_TAGS, *extra_tags]))
    return ModelCardData(license=license, library_name="transformers", pipeline_tag="text-generation",
                         tags=tags).to_yaml()


def usage_snippet(repo_id: str, chat: bool = True, revision: str | None = None) -> str:
    """Python code that downloads the model with the Auto classes and generates from it."""
    rev = f", revision={revision!r}" if revision else ""
    head = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"repo_id = {repo_id!r}\n"
            "# trust_remote_code: the model class ships with the weights (AutoTokenizer reads config.json too)\n"
            f"tokenizer = AutoTokenizer.from_pretrained(repo_id{rev}, trust_remote_code=True)\n"
            f"model = AutoModelForCausalLM.from_pretrained(repo_id{rev}, trust_remote_code=True)\n\n")
    if chat:
        return head + (
            'messages = [{"role": "user", "content": "What is 12 + 30?"}]\n'
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",\n"
            "                                       return_dict=True)\n"
            "output = model.generate(**inputs, max_new_tokens=64, do_sample=False)\n"
            'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n')
    return head + (
        'inputs = tokenizer(tokenizer.bos_token + "The capital of France is", return_tensors="pt",\n'
        "                   add_special_tokens=False)\n"
        "output = model.generate(**inputs, max_new_tokens=32, do_sample=False)\n"
        "print(tokenizer.decode(output[0], skip_special_tokens=True))\n")


def architecture_rows(config: dict, weights: dict) -> list[tuple[str, str]]:
    """(property, value) rows describing the network from `config.json` and the weight headers."""
    heads = config.get("num_attention_heads")
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (config["hidden_size"] // heads if heads else None)
    pattern = config.get("window_pattern")
    mlp_width = config.get("intermediate_size") or 4 * config["hidden_size"]
    rows = [("parameters", f"{_count(weights['parameters'])} ({weights['parameters']:,})"),
            ("depth (layers)", _num(config.get("num_hidden_layers"))),
            ("width (hidden size)", _num(config.get("hidden_size"))),
            ("attention heads", f"{heads} query / {kv} key-value, head dim {head_dim}"),
            ("MLP", f"{config.get('hidden_act')}, hidden {_num(mlp_width)}"),
            ("vocabulary", _num(config.get("vocab_size"))),
            ("context", f"{_num(config.get('max_position_embeddings'))} tokens"),
            ("positions", config.get("position_embedding", "-")),
            ("normalisation", config.get("norm_type", "-") + (", QK-norm" if config.get("qk_norm") else "")),
            ("embedding / head", "tied" if config.get("tie_word_embeddings") else "untied")]
    if config.get("final_logit_softcapping"):
        rows.append(("logit softcap", _num(float(config["final_logit_softcapping"]), 1)))
    if pattern:
        rows.append(("sliding window", f"pattern {pattern}, window {config.get('sliding_window')} tokens"))
    rows.append(("weights", f"{', '.join(weights['dtypes'])}, {weights['bytes'] / 2**20:.1f} MiB safetensors"))
    return rows


def metrics_markdown(sections: list[tuple[str, dict]], stage: str | None) -> list[str]:
    """Markdown lines with the run's evaluation table and training rows (empty list when nothing to say)."""
    from .report import SUMMARY_METRICS, WALL_TIME_KEYS, summary_table

    merged: dict[str, dict] = {}
    for name, data in sections:
        merged.setdefault(name, {}).update(data)
    lines = []
    has_evals = any(isinstance(d.get(m), (int, float)) for d in merged.values() for m in SUMMARY_METRICS)
    if has_evals:
        lines += ["### Evaluations", ""]
        if stage in STAGES:
            lines += [f"This model is the **{STAGES[stage].title}** column; the others are the stages it was "
                      "trained from (nanochat's report-card table; higher is better).", ""]
        lines += [summary_table(sections), ""]
    rows = []
    for stage_name, info in STAGES.items():
        data = merged.get(info.train_section)
        if not data:
            continue
        val = data.get("val_bpb")
        if stage_name == "base" and isinstance(merged.get("base-eval", {}).get("val_bpb"), (int, float)):
            val = merged["base-eval"]["val_bpb"]  # the dedicated evaluation over more tokens wins
        seconds = next((data[k] for k in WALL_TIME_KEYS if isinstance(data.get(k), (int, float))), None)
        rows.append(f"| {info.title} | {_num(data.get('steps'))} | "
                    f"{_count(data['tokens']) if isinstance(data.get('tokens'), (int, float)) else '-'} | "
                    f"{_num(data.get('final_loss'))} | {_num(val)} | "
                    f"{f'{seconds / 60:.1f} min' if seconds is not None else '-'} | {_num(data.get('world_size'))} |")
    if rows:
        lines += ["### Training", "", "| stage | steps | tokens | final train loss | val bits per byte | time | "
                  "processes |", "|---|---|---|---|---|---|---|", *rows, ""]
    env = merged.get("environment", {})
    if env:
        hardware = (f"{len(env['gpus'])}x {env['gpus'][0]}" if env.get("gpus") else
                    f"CPU ({env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores)")
        versions = ", ".join(f"{lib} {env[lib]}" for lib in ("torch", "transformers") if env.get(lib))
        commit = f", hf_nanogpt commit `{env['git_commit'][:12]}`" if env.get("git_commit") else ""
        lines += [f"Trained on {hardware} with {versions}{commit}.", ""]
    return lines


def recipe_markdown(model_dir: Path, recipe: dict | None) -> list[str]:
    """A one-paragraph summary of the recipe and the file itself, folded."""
    if recipe is None:
        return ["No `recipe.yaml` was found next to the weights.", ""]
    r, d = recipe["recipe"], recipe.get("derived") or {}
    facts = [f"stage `{r.get('stage')}`"]
    if r.get("init_from"):
        facts.append(f"started from `{r['init_from']}`")
    if LEGACY_STAGE_NAMES.get(r.get("stage"), r.get("stage")) == "base":
        facts.append(f"data `{r.get('train_data')}`")
    elif r.get("mixture"):
        tasks = [m.get("task", "?") for m in r["mixture"] if isinstance(m, dict)]
        facts.append(f"task mixture {', '.join(f'`{t}`' for t in tasks)}")
    if d.get("num_iterations"):
        facts.append(f"{d['num_iterations']:,} steps of {d.get('total_batch_size', 0):,} tokens "
                     f"({_count(d.get('total_tokens', 0))} tokens)")
    if r.get("lora_r"):
        facts.append(f"LoRA rank {r['lora_r']} (alpha {r.get('lora_alpha')}), merged into the weights")
    text = (model_dir / "recipe.yaml").read_text()
    return ["Trained with hf_nanogpt: " + "; ".join(facts) + ".", "",
            "<details><summary>recipe.yaml (the resolved recipe and derived plan)</summary>", "",
            "```yaml", text.rstrip(), "```", "", "</details>", ""]


def build_model_card(model_dir: str | os.PathLike, repo_id: str, run_dir: str | os.PathLike | None = None,
                     license: str = DEFAULT_LICENSE, revision: str | None = None) -> str:
    """The `README.md` text for `model_dir` published as `repo_id`.

    `run_dir` is the run folder whose report sections hold the metrics (default: the folder's parent when
    it has a `report/` sub-folder); without one the card says that no metrics were recorded.
    """
    from . import __version__
    from .report import read_sections

    folder = Path(model_dir)
    config = read_config(folder)
    weights = safetensors_summary(folder)
    recipe = read_recipe(folder)
    stage = model_stage(folder, recipe)
    run = Path(run_dir) if run_dir is not None else default_run_dir(folder)
    if run is not None and not (run / "report").is_dir():
        raise FileNotFoundError(f"run folder {run} has no report/ sub-folder with report sections (wrong --run_dir?)")
    sections = read_sections(run) if run is not None else []
    chat = stage != "base"
    name = repo_id.split("/")[-1]
    kind = {"base": "pretrained base model", "mid": "mid-trained chat model", "sft": "chat model (SFT)"}
    lines = ["---", front_matter(license, extra_tags=["conversational"] if chat else []).rstrip(), "---", "",
             f"# {name}", "",
             f"A {_count(weights['parameters'])}-parameter {kind.get(stage, 'language model')} trained with "
             "hf_nanogpt ([nanoGPT](https://github.com/karpathy/nanoGPT) and [nanochat](https://github.com/karpathy/"
             f"nanochat) rebuilt on the Hugging Face stack), model type `{config.get('model_type')}`. The modeling "
             "code ships with the weights, so it loads with `trust_remote_code=True` and nothing else installed "
             "beyond `transformers` and `torch`.", "",
             "## Usage", "", "```python", usage_snippet(repo_id, chat=chat, revision=revision).rstrip(), "```", ""]
    if chat:
        lines += ["The chat format is nanochat's (`<|user_start|>...<|user_end|><|assistant_start|>...`); the "
                  "tokenizer's chat template renders it and `generate` stops at `<|assistant_end|>`. With "
                  "hf_nanogpt installed, `python scripts/chat_cli.py -i <downloaded folder>` chats in the terminal "
                  "with calculator tool use.", ""]
    lines += ["## Architecture", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in architecture_rows(config, weights)] + [""]
    lines += ["## Results", ""]
    metrics = metrics_markdown(sections, stage)
    lines += metrics or ["No report sections were recorded for this run (run `base_eval.py` / `chat_eval.py`, "
                         "then push again with `--run_dir`).", ""]
    lines += ["## Training recipe", ""] + recipe_markdown(folder, recipe)
    lines += ["## License", "", f"`{license}`. Generated by hf_nanogpt {__version__}.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Upload


def _stage_folder(files: list[Path], card: str, into: Path) -> None:
    """Lay out the commit: links to the published files (no copy of the weights) plus the card."""
    for path in files:
        try:
            os.symlink(path.resolve(), into / path.name)
        except OSError:  # no symlinks (some Windows setups): copy instead
            shutil.copy2(path, into / path.name)
    (into / "README.md").write_text(card, encoding="utf-8")


def push_model_folder(model_dir: str | os.PathLike, repo_id: str, *, private: bool = False,
                      run_dir: str | os.PathLike | None = None, revision: str | None = None,
                      commit_message: str | None = None, license: str = DEFAULT_LICENSE, token: str | bool | None = None,
                      endpoint: str | None = None):
    """Create `repo_id` if needed and upload `model_dir` with a generated model card in one commit.

    `revision` uploads to that branch (created from `main` when missing). `endpoint` and `token` default
    to huggingface_hub's (`HF_ENDPOINT`, `HF_TOKEN` or the stored login). Returns the `CommitInfo`.
    """
    from huggingface_hub import HfApi

    folder = Path(model_dir)
    # everything that can fail locally fails before the first request
    files = upload_files(folder)
    card = build_model_card(folder, repo_id, run_dir=run_dir, license=license, revision=revision)
    api = HfApi(endpoint=endpoint, token=token)
    full_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    if full_id != repo_id:  # "name" became "user/name": the usage snippet names the full id
        card = build_model_card(folder, full_id, run_dir=run_dir, license=license, revision=revision)
    if revision:
        api.create_branch(full_id, branch=revision, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="hf_nanogpt_push_") as staging:
        _stage_folder(files, card, Path(staging))
        return api.upload_folder(repo_id=full_id, folder_path=staging, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"Upload {folder.resolve().name} with hf_nanogpt",
                                 commit_description=f"Files: {', '.join(p.name for p in files)}, README.md")
