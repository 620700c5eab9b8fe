"""Where runs live, and loading a model + tokenizer from a stage name or a folder.

A run folder holds one sub-folder per stage (`tokenizer/`, `base/`, `mid/`, `sft/`) and `report.md`.
Every model folder is self-contained: weights, config, remote code *and* the tokenizer files, so
`AutoModelForCausalLM` and `AutoTokenizer` both load from it.

The default run folder is `$HF_NANOGPT_BASE_DIR` (default `./out`); scripts that take `--model` /
`-i` accept either a path or a stage name resolved inside it (`-i sft` -> `$HF_NANOGPT_BASE_DIR/sft`).
"""

import os
from pathlib import Path

STAGES = ("tokenizer", "base", "mid", "sft")


def shared_data_dir() -> Path | None:
    """The folder of real evaluation data (`eval_bundle/`, `chat_eval/`, `corpus/`), or None.

    `$HF_NANOGPT_SHARED_DATA` when set; otherwise the first `shared/data` folder found next to the
    checkout or any folder above it, or above the current directory (a clone elsewhere still finds
    the data of the machine it runs on). Nothing is downloaded.
    """
    env = os.environ.get("HF_NANOGPT_SHARED_DATA")
    if env:
        return Path(env)
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in start.parents:
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def hub_offline() -> bool:
    """Whether the Hugging Face Hub must not be contacted (`HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def base_dir() -> Path:
    """The default run folder: `$HF_NANOGPT_BASE_DIR`, or `./out`."""
    return Path(os.environ.get("HF_NANOGPT_BASE_DIR", "out"))


def resolve_stage(name_or_path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """A stage name (`base`, `mid`, `sft`, `tokenizer`) -> `<base>/<stage>`; anything else is a path.

    Raises `FileNotFoundError` naming both what was asked and where it was looked for.
    """
    text = str(name_or_path)
    root = Path(base) if base is not None else base_dir()
    path = root / text if text in STAGES else Path(text)
    if not path.exists():
        hint = f" (stage {text!r} resolved inside the run folder {root})" if text in STAGES else ""
        raise FileNotFoundError(f"model or tokenizer folder {path} does not exist{hint}")
    return path


def resolve_model_folder(name_or_path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """`resolve_stage`, and the folder must hold a model (`config.json`): checked before anything heavy loads."""
    path = resolve_stage(name_or_path, base)
    if not path.is_dir() or not (path / "config.json").is_file():
        what = "is not a folder" if not path.is_dir() else "has no config.json"
        raise FileNotFoundError(f"{path} {what}: expected a model folder (save_pretrained output, e.g. out/sft)")
    return path


def load_model_and_tokenizer(name_or_path, device: str = "cpu", dtype=None, base=None):
    """Load `(model, tokenizer)` from a stage name or folder, model in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_nanogpt  # noqa: F401  (registers model_type="nanogpt")

    path = resolve_stage(name_or_path, base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model.to(device).eval(), tokenizer
