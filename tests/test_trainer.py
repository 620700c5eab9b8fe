"""NanoGPTTrainer: a transformers.Trainer run with the Muon + AdamW groups and nanochat's schedule."""

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.optim import MuonAdamW
from hf_nanogpt.trainer import NanoGPTTrainer


def test_trainer_trains_a_tiny_model_with_muon_and_adamw(tmp_path):
    torch.manual_seed(0)
    model = NanoGPTForCausalLM(NanoGPTConfig(vocab_size=32, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, max_position_embeddings=32))
    # learnable data: counting sequences modulo 32 from random starts
    starts = torch.randint(0, 32, (256,))
    rows = [((s + torch.arange(17)) % 32).tolist() for s in starts]
    ds = Dataset.from_dict({"input_ids": rows, "labels": rows})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=16,
                             logging_steps=5, report_to=[], save_strategy="no", use_cpu=True, seed=0,
                             disable_tqdm=True)
    trainer = NanoGPTTrainer(model=model, args=args, train_dataset=ds, lr_schedule="wsd", warmdown_ratio=0.5,
                             warmup_steps=0, final_lr_frac=0.0, momentum_end=0.95, momentum_warmdown=0.95,
                             nanogpt_optimizer=dict(embedding_lr=0.05, unembedding_lr=0.01),
                             momentum_warmup_steps=20)
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer,
                      MuonAdamW)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert groups["matrix"]["kind"] == "muon" and groups["matrix"]["momentum"] == pytest.approx(0.95)
    assert groups["matrix"]["lr"] < groups["matrix"]["initial_lr"]  # warmed down
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
