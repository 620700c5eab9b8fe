"""The final model folder is published through a temporary folder and renames (hf_nanogpt.checkpointing):
a crash mid-publish never leaves new weights under an old config, and stale weight shards go away."""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_nanogpt.checkpointing as checkpointing
from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.checkpointing import save_model_folder


def tiny(seed: int) -> NanoGPTForCausalLM:
    torch.manual_seed(seed)
    return NanoGPTForCausalLM(NanoGPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=16))


def test_a_crash_while_publishing_leaves_no_half_model(tmp_path, tiny_tokenizer, monkeypatch):
    folder = tmp_path / "base"
    (folder / "checkpoints").mkdir(parents=True)  # the stage folder holds more than the model
    save_model_folder(folder, tiny(0), tiny_tokenizer)
    old = AutoModelForCausalLM.from_pretrained(folder)
    moves = []
    real = os.replace

    def dying_replace(src, dst):
        if os.path.basename(dst) == "config.json":  # killed just before the commit file lands
            raise KeyboardInterrupt("killed")
        moves.append(os.path.basename(dst))
        real(src, dst)

    monkeypatch.setattr(checkpointing.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(folder, tiny(1), tiny_tokenizer)
    assert "model.safetensors" in moves  # the new weights were in place ...
    assert not (folder / "config.json").exists()  # ... but without config.json the folder loads as nothing,
    with pytest.raises((OSError, ValueError)):  # not as new weights under the old config
        AutoModelForCausalLM.from_pretrained(folder)
    monkeypatch.undo()
    save_model_folder(folder, tiny(1), tiny_tokenizer)  # the next save completes and clears the debris
    new = AutoModelForCausalLM.from_pretrained(folder)
    assert not list(folder.glob(".save.tmp-*")) and (folder / "checkpoints").is_dir()
    assert not torch.equal(new.lm_head.weight, old.lm_head.weight)
    assert torch.equal(new.lm_head.weight, tiny(1).lm_head.weight)


def test_stale_weight_shards_are_removed(tmp_path, tiny_tokenizer):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json"):
        (folder / name).write_text("from a bigger model saved here before")
    save_model_folder(folder, tiny(0), tiny_tokenizer)
    assert sorted(p.name for p in folder.glob("model*.safetensors*")) == ["model.safetensors"]
    assert AutoModelForCausalLM.from_pretrained(folder).config.hidden_size == 32
