"""NanoGPTTrainer: `transformers.Trainer` with the Muon + AdamW groups and nanochat's schedules.

    from transformers import TrainingArguments
    from hf_nanogpt.trainer import NanoGPTTrainer
    trainer = NanoGPTTrainer(model=model, args=TrainingArguments(...), train_dataset=ds,
                             nanogpt_optimizer=dict(matrix_lr=0.02, embedding_lr=0.3), lr_schedule="wsd")
    trainer.train()

The parameter groups and learning rates are those of `hf_nanogpt.optim.build_optimizer` (the
`learning_rate` of `TrainingArguments` is ignored: each group has its own); the lr multiplier, Muon
momentum and Muon weight decay follow `hf_nanogpt.schedules.Schedule` over `max_steps`, as in the native
loop. This is the path for people who already train with `Trainer` / TRL; `hf_nanogpt.training` is the
native loop.
"""

import dataclasses

import torch
from transformers import Trainer, TrainerCallback

from .optim import build_optimizer
from .schedules import Schedule


class MuonScheduleCallback(TrainerCallback):
    """Sets the Muon groups' momentum and weight decay at the start of every step (`schedule`)."""

    def __init__(self, trainer: "NanoGPTTrainer"):
        self.trainer = trainer

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        schedule = self.trainer.resolved_schedule(state.max_steps)
        if optimizer is None or schedule is None:
            return
        for group in optimizer.param_groups:
            if group.get("kind") == "muon":
                group["momentum"] = schedule.momentum(state.global_step)
                group["weight_decay"] = schedule.muon_weight_decay(state.global_step)


class NanoGPTTrainer(Trainer):
    """A `Trainer` whose optimizer is `MuonAdamW` with nanochat's groups and whose schedules are nanochat's.

    Extra keyword arguments: `nanogpt_optimizer` (kwargs of `build_optimizer`: matrix_lr, embedding_lr,
    unembedding_lr, scalar_lr, lora_lr, weight_decay, muon_variant, lookahead_k, ...), and any field of
    `hf_nanogpt.schedules.Schedule` but `num_iterations` (lr_schedule, warmup_steps, warmdown_ratio,
    final_lr_frac, step_milestones, step_factors, momentum_start/end/warmup_steps/warmdown,
    weight_decay_schedule). The Muon weight decay schedule starts from `nanogpt_optimizer["weight_decay"]`.
    """

    def __init__(self, *args, nanogpt_optimizer: dict | None = None, **kwargs):
        fields = {f.name for f in dataclasses.fields(Schedule)} - {"num_iterations", "weight_decay"}
        self.schedule_args = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        self.nanogpt_optimizer = dict(nanogpt_optimizer or {})
        self.schedule_args["weight_decay"] = self.nanogpt_optimizer.get("weight_decay", 0.0)
        self._schedule: Schedule | None = None
        callbacks = list(kwargs.pop("callbacks", None) or [])
        callbacks.append(MuonScheduleCallback(self))
        super().__init__(*args, callbacks=callbacks, **kwargs)

    def resolved_schedule(self, num_steps: int) -> Schedule | None:
        """The schedule over `num_steps` optimizer steps (None before the step count is known)."""
        if num_steps and (self._schedule is None or self._schedule.num_iterations != num_steps):
            self._schedule = Schedule(num_iterations=num_steps, **self.schedule_args)
        return self._schedule

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = build_optimizer(model if model is not None else self.model, **self.nanogpt_optimizer)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            schedule = self.resolved_schedule(num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_mult)
        return self.lr_scheduler
