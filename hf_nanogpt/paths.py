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


def load_model_and_tokenizer(name_or_path, device: str = "cpu", dtype=None, base=None):
    """Load `(model, tokenizer)` from a stage name or folder, model in eval mode on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hf_nanogpt  # noqa: F401  (registers model_type="nanogpt")

    path = resolve_stage(name_or_path, base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model.to(device).eval(), tokenizer
