"""`transformers.Trainer` with nanochat's optimizer: Muon for the block matrices, AdamW for the rest.

    from hf_nanogpt.trainer import NanoGPTTrainer
    trainer = NanoGPTTrainer(model=model, args=TrainingArguments(...), train_dataset=ds,
                             nanogpt_optimizer=dict(matrix_lr=0.02, embedding_lr=0.2), lr_schedule="wsd")
    trainer.train()

The parameter groups and learning rates are those of `hf_nanogpt.optim.build_optimizer` (the
`learning_rate` of `TrainingArguments` is ignored: each group has its own); the schedule is
`hf_nanogpt.optim.lr_multiplier` over `max_steps`, and Muon's momentum warms up as in nanochat. This is
the path for people who already train with `Trainer` / TRL; `hf_nanogpt.training` is the native loop.
"""

import torch
from transformers import Trainer, TrainerCallback

from .optim import build_optimizer, lr_multiplier, muon_momentum


class MuonMomentumCallback(TrainerCallback):
    """Sets the Muon groups' momentum at the start of every step (linear warmup)."""

    def __init__(self, start: float = 0.85, end: float = 0.95, warmup_steps: int = 300):
        self.start, self.end, self.warmup_steps = start, end, warmup_steps

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None:
            return
        momentum = muon_momentum(state.global_step, self.start, self.end, self.warmup_steps)
        for group in optimizer.param_groups:
            if group.get("kind") == "muon":
                group["momentum"] = momentum


class NanoGPTTrainer(Trainer):
    """A `Trainer` whose optimizer is `MuonAdamW` with nanochat's groups and whose schedule is nanochat's.

    Extra keyword arguments: `nanogpt_optimizer` (kwargs of `build_optimizer`: matrix_lr,
    embedding_lr, unembedding_lr, scalar_lr, lora_lr, weight_decay, ...), `lr_schedule` ("wsd",
    "cosine", "constant"), `warmup_ratio`, `warmdown_ratio`, `final_lr_frac`, and
    `muon_momentum_warmup_steps`.
    """

    def __init__(self, *args, nanogpt_optimizer: dict | None = None, lr_schedule: str = "wsd",
                 warmup_ratio: float = 0.0, warmdown_ratio: float = 0.2, final_lr_frac: float = 0.0,
                 muon_momentum_warmup_steps: int = 300, **kwargs):
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(MuonMomentumCallback(warmup_steps=muon_momentum_warmup_steps))
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self.nanogpt_optimizer = dict(nanogpt_optimizer or {})
        self.schedule = dict(schedule=lr_schedule, warmup_ratio=warmup_ratio, warmdown_ratio=warmdown_ratio,
                             final_lr_frac=final_lr_frac)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = build_optimizer(model if model is not None else self.model, **self.nanogpt_optimizer)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_multiplier(step, num_training_steps, **self.schedule))
        return self.lr_scheduler
