"""Checkpoints: Hugging Face model folders plus everything needed for an exact resume, written atomically.

Layout of a stage folder (`out/base`, ...):

    out/base/                      the final model: save_pretrained + tokenizer + remote code
    out/base/recipe.yaml           the resolved recipe and derived plan
    out/base/train_log.jsonl       one JSON row per logged step / evaluation
    out/base/checkpoints/
        latest                     name of the newest complete checkpoint (replaced atomically)
        step_000200/               loadable with AutoModelForCausalLM like the final folder, plus
            trainer_state/meta.json           step, plan, metric history
            trainer_state/optimizer.pt        optimizer state (+ Lookahead slow weights, `lookahead_slow`)
            trainer_state/rank_00000.pt       RNG states and data-loader state of each process

Atomicity: a checkpoint is written into `step_N.tmp-*` and renamed into place only when every
process has finished writing; `latest` is then replaced with a rename too. A crash or kill at any
moment leaves the previous checkpoint and `latest` intact (at worst a `.tmp-*` folder, removed by the
next save). Retention keeps the newest `keep` (>= 1) step checkpoints and never the one `latest` names.
The final model folder is written through a temporary folder and renames, `config.json` last
(`publish_folder`), so a crash never leaves new weights under an old config.
"""

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from .optim import is_dtensor

STATE_DIR = "trainer_state"
CHECKPOINTS = "checkpoints"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _is_sharded(model) -> bool:
    """Whether parameters are FSDP2 `DTensor` shards (their full state must be gathered)."""
    return any(is_dtensor(p) for p in model.parameters())


def rng_state() -> dict:
    """This process's random generators (python, numpy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# The file whose presence makes a folder loadable (`from_pretrained` reads it first): moved in last.
_COMMIT_FILES = ("config.json", "adapter_config.json")
_WEIGHT_FILES = ("model*.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "*.bin")


def save_model_folder(folder: Path, model, tokenizer, state_dict: dict | None = None) -> None:
    """`save_pretrained` of the model (remote code + auto_map included) and the tokenizer into `folder`,
    through a temporary folder and renames (`publish_folder`): a crash at any moment leaves either a
    complete model or a folder without `config.json`, never new weights with an old config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".save.tmp-*"):  # left by a crash during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder / f".save.tmp-{os.getpid()}"
    model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    publish_folder(tmp, folder)


def publish_folder(tmp: Path, folder: Path) -> None:
    """Move every file of `tmp` into `folder`, then remove `tmp`. The old commit file (`config.json`, or
    `adapter_config.json` for adapters) goes first and the new one comes last, so a reader sees the old
    model, no model, or the complete new one; weight files of an older save that this one does not
    have (other shard names) are removed before the commit."""
    names = sorted(p.name for p in tmp.iterdir())
    commit = next((c for c in _COMMIT_FILES if c in names), None)
    for c in _COMMIT_FILES:
        (folder / c).unlink(missing_ok=True)
    for pattern in _WEIGHT_FILES:
        for stale in folder.glob(pattern):
            if stale.name not in names:
                stale.unlink()
    for name in [n for n in names if n != commit] + ([commit] if commit else []):
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp / name, target)
    tmp.rmdir()


class Checkpointer:
    """Saves and restores step checkpoints of one stage folder, for one or many processes.

    `accelerator` provides `is_main_process`, `process_index`, `wait_for_everyone()` and
    `unwrap_model()` (an `accelerate.Accelerator`); every process must call `save` together.
    """

    def __init__(self, output_dir: str | os.PathLike, accelerator, keep: int = 2):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / CHECKPOINTS
        self.accelerator = accelerator
        self.keep = keep

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, or None before the first save."""
        pointer = self.root / "latest"
        return self.root / pointer.read_text().strip() if pointer.exists() else None

    # ------------------------------------------------------------------ save
    def save(self, step: int, model, tokenizer, optimizer, loader_state: dict, meta: dict) -> Path:
        acc = self.accelerator
        if self.keep < 1:  # keeping none would delete the checkpoint `latest` is about to name
            raise ValueError(f"keep_checkpoints={self.keep}: at least 1 checkpoint must be kept when saving")
        final = self.root / f"step_{step:06d}"
        tmp = self.root / f"step_{step:06d}.tmp-save"
        if _is_sharded(model):  # FSDP2: gather full state dicts (collective: every rank must call it)
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_sd = get_model_state_dict(model, options=options)
            optim_sd = get_optimizer_state_dict(model, optimizer, options=options)
        else:  # single process or DDP: every rank holds the same full state
            model_sd, optim_sd = None, optimizer.state_dict()
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("*.tmp-*"):  # left by a crash during an earlier save
                shutil.rmtree(stale, ignore_errors=True)
            (tmp / STATE_DIR).mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save({"rng": rng_state(), "loader": loader_state},
                   tmp / STATE_DIR / f"rank_{acc.process_index:05d}.pt")
        if acc.is_main_process:
            save_model_folder(tmp, acc.unwrap_model(model), tokenizer, state_dict=model_sd)
            torch.save(optim_sd, tmp / STATE_DIR / "optimizer.pt")
            (tmp / STATE_DIR / "meta.json").write_text(json.dumps(
                {"step": step, "time": time.time(), "world_size": acc.num_processes, **meta}, indent=2, default=str))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():  # re-saving the same step (e.g. after a resume): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)  # the checkpoint appears complete or not at all
            _write_text_atomic(self.root / "latest", final.name)
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        """Keep the newest `keep` step checkpoints, and always the one `latest` names."""
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir() and ".tmp-" not in p.name)
        latest = self.latest()
        for old in steps[:-self.keep]:
            if latest is None or old.name != latest.name:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ load
    def resolve(self, resume_from: str) -> Path:
        """`latest` -> the newest complete checkpoint of this stage; anything else is a folder path."""
        if resume_from == "latest":
            pointer = self.root / "latest"
            if not pointer.exists():
                raise FileNotFoundError(f"resume_from=latest: no checkpoint in {self.root} (nothing saved yet)")
            path = self.root / pointer.read_text().strip()
        else:
            path = Path(resume_from)
        if not (path / STATE_DIR / "meta.json").exists():
            raise FileNotFoundError(f"resume_from={resume_from}: {path} is not a complete checkpoint "
                                    f"(missing {STATE_DIR}/meta.json)")
        return path

    def load(self, path: Path, model, optimizer) -> tuple[dict, dict | None]:
        """Restore model weights, optimizer, this rank's RNG; return (meta, this rank's loader state)."""
        from safetensors.torch import load_file

        acc = self.accelerator
        meta = json.loads((path / STATE_DIR / "meta.json").read_text())
        weights = {}
        for shard in sorted(path.glob("*.safetensors")):
            weights.update(load_file(shard))
        target = acc.unwrap_model(model)
        if _is_sharded(model):
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
            missing, unexpected = [], []
        else:
            missing, unexpected = target.load_state_dict(weights, strict=False)
        tied = {"lm_head.weight"} if getattr(target.config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"checkpoint {path} does not match the model: missing={sorted(missing)[:5]} "
                               f"unexpected={sorted(unexpected)[:5]}")
        # tensors, numbers and strings only (Lookahead's slow weights included): no code is unpickled
        optim_sd = torch.load(path / STATE_DIR / "optimizer.pt", weights_only=True)
        if _is_sharded(model):
            set_optimizer_state_dict(model, optimizer, optim_state_dict=optim_sd,
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(optim_sd)
        rank_file = path / STATE_DIR / f"rank_{acc.process_index:05d}.pt"
        loader_state = None
        if rank_file.exists():
            rank_state = torch.load(rank_file, weights_only=False)
            set_rng_state(rank_state["rng"])
            loader_state = rank_state["loader"]
        return meta, loader_state
