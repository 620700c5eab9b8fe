"""Mixture-of-Experts MLP for NanoGPT: a top-k router and experts stored as 3-D weights.

A layer whose `config.mlp_layer_types[i]` is `"moe"` gets `NanoGPTMoE` instead of the dense MLP (picked when
the layer is built). Anchors:

- Switch / Mixtral / OLMoE / Qwen3-MoE: softmax router, top-k experts, weighted sum of their outputs, the
  Switch load-balancing loss (transformers' `load_balancing_loss_func`) added to the LM loss with
  `router_aux_loss_coef`; optional router z-loss (ST-MoE, arXiv:2202.08906) with `router_z_loss_coef`.
- DeepSeek-V3 (arXiv:2412.19437): sigmoid router, shared experts every token goes through, and
  auxiliary-loss-free balancing: a per-expert bias added to the scores *for the choice only* (not for the
  weights), nudged after every optimizer step by `rate * sign(mean load - load)` outside the gradient
  (`NanoGPTRouter.update_bias`; rate 1e-3 as DeepSeek-V3 and nanochat's moe3 branch).

Dispatch (no per-expert Python loop, no boolean masks, no dropped tokens): the (token, expert) pairs are
sorted by expert, the tokens gathered in that order, and each weight matrix is applied to its contiguous
segment by one grouped matmul (`torch._grouped_mm`, which runs on CPU since torch 2.9 and on Hopper GPUs in
bf16; elsewhere one matmul per expert segment). Shared experts are extra experts every token is sent to with
weight 1, so they ride in the same grouped matmuls. Expert weights are (experts, out, in) like `nn.Linear`'s,
so Muon orthogonalises each expert's matrix on its own (`hf_nanogpt.optim`).

This file travels as remote code with the modeling file: torch and transformers imports only.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

from .configuration_nanogpt import NanoGPTConfig


def relu_squared(h: torch.Tensor) -> torch.Tensor:
    return F.relu(h).square()


# Elementwise nonlinearities of the experts (module-level functions, so the model pickles); SwiGLU is a gate.
_ACTIVATIONS = {"relu2": relu_squared, "gelu": F.gelu, "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
                "swiglu": F.silu}


def grouped_matmul(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x (N, in) sorted by group, weight (G, out, in), offsets (G,) int32 cumulative ends -> (N, out).

    Row block g (rows offsets[g-1]:offsets[g]) is multiplied by weight[g]^T. `torch._grouped_mm` does all
    groups in one kernel where it exists (CPU any float dtype; CUDA bf16 on sm90+); otherwise one matmul per
    contiguous segment (a loop over experts, but over slices, never over masks of all tokens; also when a
    width is not a multiple of 16 bytes, which the kernel refuses). Measured on
    the 2-core CPU for 4096 x 128 -> 256 with 8 experts: grouped 6.0 ms, segment loop 6.4 ms, one dense
    matmul of the same size 5.2 ms.
    """
    weight = weight.to(x.dtype)  # autocast does not cover the grouped kernel
    aligned = all(n * x.element_size() % 16 == 0 for n in weight.shape[1:])  # the kernel needs 16-byte strides
    if aligned and hasattr(torch, "_grouped_mm") and (x.device.type == "cpu" or (
            x.device.type == "cuda" and x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9)):
        return torch._grouped_mm(x, weight.transpose(-2, -1), offs=offsets)
    ends = offsets.tolist()
    starts = [0] + ends[:-1]
    return torch.cat([x[s:e] @ weight[g].T for g, (s, e) in enumerate(zip(starts, ends))], dim=0)


class NanoGPTRouter(nn.Module):
    """Scores each token against every routed expert and picks the top k.

    Returns (router_logits (N, E) float32, weights (N, k), experts (N, k)); the logits are what
    `output_router_logits` collects (transformers' `OutputRecorder(..., index=0)`). Weights are the chosen
    experts' scores (softmax or sigmoid), renormalised to sum to 1 when k > 1 (Mixtral, DeepSeek-V3).
    `expert_bias` (E,) shifts the choice only (DeepSeek-V3's auxiliary-loss-free balancing); it is a
    persistent buffer, saved with the weights and never seen by the optimizer.
    """

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.num_experts, self.top_k = config.num_experts, config.num_experts_per_tok
        self.sigmoid = config.router_activation == "sigmoid"
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.gate.init_role = "router"  # AdamW at its own lr (hf_nanogpt.optim), small init (_init_weights)
        self.register_buffer("expert_bias", torch.zeros(config.num_experts), persistent=True)
        self.bias_update_rate = config.router_bias_update_rate if config.moe_balancing == "bias" else 0.0
        self.load = None  # (E,) tokens routed to each expert since the last `pop_load` (training only)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.gate(x).float()  # (N, E), float32 for a stable softmax / sigmoid
        scores = torch.sigmoid(logits) if self.sigmoid else logits.softmax(dim=-1)
        choice = scores + self.expert_bias if self.bias_update_rate else scores  # the bias picks, never weighs
        experts = choice.topk(self.top_k, dim=-1).indices  # (N, k)
        weights = scores.gather(-1, experts)  # (N, k)
        if self.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if self.training:  # expert load for the training log and the bias update (not part of the graph)
            with torch.no_grad():
                counts = torch.bincount(experts.flatten(), minlength=self.num_experts).float()
                self.load = counts if self.load is None else self.load + counts
        return logits, weights.to(x.dtype), experts

    def pop_load(self) -> torch.Tensor | None:
        """Tokens routed to each expert (E,) since the last call (None if no training forward ran)."""
        load, self.load = self.load, None
        return load

    @torch.no_grad()
    def update_bias(self, load: torch.Tensor) -> None:
        """DeepSeek-V3's balancing step: raise the bias of under-loaded experts, lower over-loaded ones.
        `load` (E,) must be the global count (summed over processes) so every rank takes the same step."""
        if self.bias_update_rate:
            self.expert_bias.add_(self.bias_update_rate * torch.sign(load.mean() - load).to(self.expert_bias))


class NanoGPTExperts(nn.Module):
    """E routed + S shared experts, each an MLP, as 3-D weights (E + S, out, in) in `nn.Linear` layout:
    `up_proj` (E + S, h, d) (`gate_up_proj` (E + S, 2h, d) for SwiGLU) and `down_proj` (E + S, d, h)."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        n = config.num_experts + config.num_shared_experts
        d, h = config.hidden_size, config.moe_intermediate_size
        self.gated = config.hidden_act == "swiglu"
        self.act = _ACTIVATIONS[config.hidden_act]
        # the input matrices get the MLP's "mlp_input" init, the output ones "residual" (zeros in nanochat)
        self.up_proj = nn.Parameter(torch.empty(n, (2 if self.gated else 1) * h, d))
        self.down_proj = nn.Parameter(torch.empty(n, d, h))
        self.init_role = "experts"

    def forward(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (N, d), experts (N, k) expert ids, weights (N, k) -> (N, d) = sum_j weights[:, j] * expert_j(x)."""
        n_tok, k = experts.shape
        flat = experts.flatten()  # (N k,) the expert of each (token, slot) pair
        order = flat.argsort(stable=True)  # pairs sorted by expert
        token = order // k  # (N k,) source token of each sorted pair
        offsets = torch.bincount(flat, minlength=self.up_proj.shape[0]).cumsum(0).to(torch.int32)  # (G,) ends
        h = grouped_matmul(x[token], self.up_proj, offsets)  # (N k, h) or (N k, 2h)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        y = grouped_matmul(h, self.down_proj, offsets) * weights.flatten()[order, None]  # (N k, d)
        return torch.zeros_like(x).index_add_(0, token, y)  # sum each token's k contributions


class NanoGPTMoE(nn.Module):
    """The MoE MLP: route, run the chosen (and the shared) experts, sum. (B, T, d) -> (B, T, d)."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.router = NanoGPTRouter(config)
        self.experts = NanoGPTExperts(config)
        self.num_experts, self.num_shared = config.num_experts, config.num_shared_experts
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d)
        _, weights, experts = self.router(x)  # (N, k) each
        if self.num_shared:  # shared experts: ids E .. E + S - 1, weight 1, for every token
            shared = torch.arange(self.num_experts, self.num_experts + self.num_shared, device=x.device)
            experts = torch.cat([experts, shared.expand(x.shape[0], -1)], dim=-1)
            weights = torch.cat([weights, weights.new_ones(x.shape[0], self.num_shared)], dim=-1)
        return self.dropout(self.experts(x, experts, weights).reshape(shape))


def router_losses(router_logits: tuple[torch.Tensor, ...], config: NanoGPTConfig,
                  attention_mask: torch.Tensor | None) -> torch.Tensor:
    """`router_aux_loss_coef` x load-balancing loss + `router_z_loss_coef` x z-loss over all MoE layers.

    Balancing loss: softmax routers use transformers' `load_balancing_loss_func` (Switch: E x sum_i f_i P_i,
    f = share of routed slots, P = mean router probability, padding excluded by `attention_mask`); sigmoid
    routers the same formula on scores normalised to sum to 1 per token (DeepSeek-V3's complementary
    balance loss), as a softmax of their logs. z-loss: mean over tokens of logsumexp(logits)^2 (ST-MoE).
    """
    total = router_logits[0].new_zeros(())
    if config.router_aux_loss_coef > 0:
        logits = router_logits
        if config.router_activation == "sigmoid":  # softmax(log(s)) = s / sum(s): the normalised scores
            logits = tuple(F.logsigmoid(z) for z in router_logits)
        mask = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2 else None
        if mask is not None and mask.shape[1] * mask.shape[0] != router_logits[0].shape[0]:
            mask = None  # a cached call: the mask covers the past too; balance over every token
        aux = load_balancing_loss_func(logits, config.num_experts, config.num_experts_per_tok, mask)
        total = total + config.router_aux_loss_coef * aux
    if config.router_z_loss_coef > 0:
        z = torch.stack([torch.logsumexp(z, dim=-1).square().mean() for z in router_logits]).mean()
        total = total + config.router_z_loss_coef * z
    return total


@torch.no_grad()
def moe_step(model: nn.Module, all_reduce=None) -> dict[str, list[float]]:
    """After an optimizer step: collect every router's expert load (summed over processes with
    `all_reduce(tensor) -> tensor` when given), update the bias-balanced routers, and return the
    per-layer load imbalance `moe_load_max_over_mean` (1.0 = perfectly balanced) for the training log."""
    routers = [m for m in model.modules() if isinstance(m, NanoGPTRouter)]
    loads = [r.pop_load() for r in routers]
    if not routers or any(load is None for load in loads):
        return {}
    stacked = torch.stack(loads)  # (layers, E)
    if all_reduce is not None:
        stacked = all_reduce(stacked)
    for router, load in zip(routers, stacked):
        router.update_bias(load)
    ratio = stacked.max(dim=-1).values / stacked.mean(dim=-1).clamp(min=1e-9)
    return {"moe_load_max_over_mean": [round(float(v), 4) for v in ratio]}


__all__ = ["NanoGPTExperts", "NanoGPTMoE", "NanoGPTRouter", "grouped_matmul", "moe_step", "router_losses"]
