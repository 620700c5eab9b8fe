"""NanoGPT's building blocks: norms, rotary embedding, attention, MLPs and the decoder layers.

A layer's token mixer is attention or a Mamba-2 mixer (`config.layer_types`, `mamba_nanogpt.py`), its MLP
dense or a Mixture of Experts (`config.mlp_layer_types`, `moe_nanogpt.py`); `make_decoder_layer` builds it.

Each architecture variant is picked once, when the module is built (the small `make_*` factories), never
re-decided in `forward`. Split out of `modeling_nanogpt.py` by part; like it, this file travels as remote
code next to saved checkpoints, so it imports only torch, transformers and its siblings.
"""

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_nanogpt import VE_GATE_CHANNELS, NanoGPTConfig
from .mamba_nanogpt import NanoGPTMamba
from .moe_nanogpt import NanoGPTMoE


def tag(module: nn.Module, role: str) -> nn.Module:
    """Mark a Linear/Embedding with its init role (read by `_init_weights` and the optimizer's grouping)."""
    module.init_role = role
    return module


class CPURMSNorm(torch.autograd.Function):
    """x / rms(x) over the last dim, forward and backward in two passes each over x, for CPUs in eager mode.

    Eager `F.rms_norm` on a CPU runs as separate ops (square, mean, add, rsqrt, multiply) and autograd
    differentiates each: measured 3.4 ms fwd + bwd at (8, 256, 256) float32 on one thread, against 2.0 ms
    here, about 4% of a bench training step with its 18 norms. GPUs have a fused kernel, and inductor fuses
    either form, so neither uses this. Statistics in float32 for any input dtype, as `F.rms_norm`.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        d, stat = x.shape[-1], torch.promote_types(x.dtype, torch.float32)
        # r = 1 / sqrt(mean(x^2) + eps), (..., 1) in float32 (float64 for float64 x), from one read of x
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=stat).square_().div_(d).add_(eps).rsqrt_()
        ctx.save_for_backward(x, r)
        return (x * r).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, r = ctx.saved_tensors
        d = x.shape[-1]
        # y = x r  =>  dx = r g - x r^3 (g . x) / d, with (g . x) per row in float32
        dot = torch.linalg.vecdot(grad.to(r.dtype), x.to(r.dtype), dim=-1).unsqueeze(-1)  # (..., 1)
        return (grad * r - x * (dot * r.pow(3) / d)).to(x.dtype), None


class NanoGPTRMSNorm(nn.Module):
    """Parameter-free RMSNorm (nanochat): x / rms(x). `F.rms_norm` accumulates in float32 for bf16 input
    itself, so no float32 copy of x (and none back) is made; eager training on a CPU uses `CPURMSNorm`."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled() \
                and not torch.compiler.is_compiling():
            return CPURMSNorm.apply(x, self.eps)
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def make_norm(config: NanoGPTConfig, dim: int) -> nn.Module:
    """The normalisation layer of this config: weightless RMSNorm or affine LayerNorm (GPT-2)."""
    if config.norm_type == "rmsnorm":
        return NanoGPTRMSNorm(config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


class NanoGPTRotaryEmbedding(nn.Module):
    """Rotary position embedding tables (RoFormer, https://arxiv.org/abs/2104.09864).

    Returns (cos, sin) of shape (B, T, head_dim / 2) for the given `position_ids`, so left-padded
    batches (whose positions `generate()` derives from the attention mask) rotate correctly.
    """

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.base = config.rope_theta
        # Non-persistent: never saved, recomputed by `_init_weights` after `from_pretrained`.
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self, device=None) -> torch.Tensor:
        channels = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        return 1.0 / (self.base ** (channels / self.head_dim))  # (hd/2,)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Angles in float32 even under bf16 autocast: positions up to 1e5 lose precision otherwise.
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device)  # (B, T, hd/2)
        # The tables in the dtype q and k will have: autocast's when it is on (nanochat rotates in bf16), so
        # the rotation neither promotes bf16 q/k to float32 nor makes float32 copies of them.
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + hd/2) of x (B, nh, T, hd) by the angles in cos/sin (B, T, hd/2).

    Same convention as nanochat (y1 = x1 cos + x2 sin, y2 = -x1 sin + x2 cos), so nanochat checkpoints
    map onto this model without permuting q/k channels.
    """
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads: (B, 1, T, hd/2)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd): share each key/value head with n_rep query heads."""
    if n_rep == 1:
        return x
    b, n_kv, t, hd = x.shape
    return x[:, :, None].expand(b, n_kv, n_rep, t, hd).reshape(b, n_kv * n_rep, t, hd)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention in plain PyTorch; returns (B, T, nh, hd) and the (B, nh, T, S) weights."""
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:  # additive float mask from transformers' mask utilities
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, T, nh, hd)
    return out, weights


class NanoGPTAttention(nn.Module):
    """Causal self-attention with grouped-query heads, rotary positions, QK-norm (optionally scaled), an
    optional sliding window and an optional value embedding; the kernel is `config._attn_implementation`."""

    def __init__(self, config: NanoGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        # nanochat multiplies the normed q and k each by qk_scale; folding qk_scale^2 into the softmax
        # scale is the same product (q s) . (k s) / sqrt(hd) with two fewer elementwise passes.
        self.scaling = config.qk_scale**2 * self.head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = config.dropout
        # HF convention: window size in tokens including the current one; None = full attention.
        self.sliding_window = config.window_sizes[layer_idx]

        self.q_proj = tag(nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.bias), "input")
        kv_width = self.num_key_value_heads * self.head_dim
        self.k_proj = tag(nn.Linear(config.hidden_size, kv_width, bias=config.bias), "input")
        self.v_proj = tag(nn.Linear(config.hidden_size, kv_width, bias=config.bias), "input")
        self.o_proj = tag(nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias), "residual")
        # QK-norm (https://arxiv.org/abs/2302.05442) keeps attention logits bounded without a scale search.
        self.q_norm = make_norm(config, self.head_dim) if config.qk_norm else nn.Identity()
        self.k_norm = make_norm(config, self.head_dim) if config.qk_norm else nn.Identity()
        # Value-embedding gate (ResFormer, nanochat): one gate per kv head, from the first 12 input channels.
        has_ve = layer_idx in config.value_embedding_layers
        self.ve_gate = (tag(nn.Linear(VE_GATE_CHANNELS, self.num_key_value_heads, bias=False), "ve_gate")
                        if has_ve else None)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        value_embedding: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        bsz, seq_len, _ = hidden_states.shape
        if hidden_states.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # cast the normed input once: autocast would cast it again for each of q, k and v. CPU only: the
            # three gradients then sum in bf16, not float32; GPUs keep nanochat's structure (the casts are cheap)
            hidden_states = hidden_states.to(torch.get_autocast_dtype("cpu"))
        q = self.q_proj(hidden_states).view(bsz, seq_len, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(hidden_states).view(bsz, seq_len, -1, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(hidden_states).view(bsz, seq_len, -1, self.head_dim)  # (B, T, nkv, hd)
        if self.ve_gate is not None:  # v += gate * ve, gate in (0, 3) per kv head
            gate = 3 * torch.sigmoid(self.ve_gate(hidden_states[..., :VE_GATE_CHANNELS]))  # (B, T, nkv)
            v = v + gate.unsqueeze(-1) * value_embedding.view_as(v).to(v.dtype)
        v = v.transpose(1, 2)  # (B, nkv, T, hd)
        if position_embeddings is not None:  # rotary configs only; learned positions were added to x
            cos, sin = position_embeddings
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = self.q_norm(q), self.k_norm(k)  # nanochat order: rotate, then normalise

        if cache is not None:  # append this step's keys/values; get the whole history back
            k, v = cache.update(k, v, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        # On CPUs, PyTorch's flash-attention kernel is slower in bf16 than in fp32 at these sizes (fwd + bwd of
        # (32, 4, 64, 32): 8.7 ms in bf16 vs 2.5 ms in fp32, 2-core EPYC), so under CPU autocast (or with bf16
        # weights) attention runs in fp32 and its output goes back to bf16 for o_proj.
        cpu_autocast = q.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        low_precision_cpu = cpu_autocast or (q.device.type == "cpu" and v.dtype in (torch.bfloat16, torch.float16))
        if low_precision_cpu:  # the dtype the attention would have returned: autocast's, else the values'
            out_dtype = torch.get_autocast_dtype("cpu") if cpu_autocast else v.dtype
            q, k, v = q.float(), k.float(), v.float()
            if attention_mask is not None and attention_mask.is_floating_point():
                attention_mask = attention_mask.float()
        with torch.autocast("cpu", enabled=False) if low_precision_cpu else contextlib.nullcontext():
            out, weights = attention_interface(
                self,
                q,
                k,
                v,
                attention_mask,
                dropout=self.attention_dropout if self.training else 0.0,
                scaling=self.scaling,
                sliding_window=self.sliding_window,  # used by flash kernels; masks carry it for the others
                **kwargs,
            )
        if low_precision_cpu:
            out = out.to(out_dtype)
        out = out.reshape(bsz, seq_len, -1).contiguous()  # (B, T, nh * hd)
        return self.resid_dropout(self.o_proj(out)), weights


class NanoGPTMLP(nn.Module):
    """Position-wise MLP: down(act(up(x))) with ReLU^2 (nanochat) or GELU (GPT-2)."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.up_proj = tag(nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias), "mlp_input")
        self.down_proj = tag(nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias), "residual")
        self.act = make_activation(config.hidden_act)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.up_proj(x))))


class NanoGPTGatedMLP(nn.Module):
    """SwiGLU MLP (https://arxiv.org/abs/2002.05202): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.gate_proj = tag(nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias), "mlp_input")
        self.up_proj = tag(nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias), "mlp_input")
        self.down_proj = tag(nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias), "residual")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class ReLUSquared(nn.Module):
    """relu(x)^2 (Primer, https://arxiv.org/abs/2109.08668), nanochat's MLP nonlinearity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def make_activation(name: str) -> nn.Module:
    return {"relu2": ReLUSquared, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}[name]()


def make_mlp(config: NanoGPTConfig, layer_idx: int = 0) -> nn.Module:
    """The MLP of layer `layer_idx`: a Mixture of Experts where `mlp_layer_types` says "moe", else dense."""
    if config.mlp_layer_types[layer_idx] == "moe":
        return NanoGPTMoE(config)
    return NanoGPTGatedMLP(config) if config.hidden_act == "swiglu" else NanoGPTMLP(config)


class NanoGPTDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: NanoGPTConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = make_norm(config, config.hidden_size)
        self.self_attn = NanoGPTAttention(config, layer_idx)
        self.post_attention_layernorm = make_norm(config, config.hidden_size)
        self.mlp = make_mlp(config, layer_idx)

    def mix(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        """The token mixer on the normed stream: attention here, Mamba-2 in `NanoGPTMambaDecoderLayer`."""
        return self.self_attn(hidden_states, **kwargs)[0]

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        value_embedding: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_out = self.mix(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            value_embedding=value_embedding,
            **kwargs,
        )
        hidden_states = hidden_states + attn_out
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class NanoGPTMambaDecoderLayer(NanoGPTDecoderLayer):
    """Pre-norm block with a Mamba-2 mixer instead of attention: x + mamba(norm(x)), then x + mlp(norm(x)).
    Its `attention_mask` is the 2-D padding mask (B, T) or None; positions and value embeddings do not apply."""

    def __init__(self, config: NanoGPTConfig, layer_idx: int):
        GradientCheckpointingLayer.__init__(self)
        self.input_layernorm = make_norm(config, config.hidden_size)
        self.mamba = NanoGPTMamba(config, layer_idx)
        self.post_attention_layernorm = make_norm(config, config.hidden_size)
        self.mlp = make_mlp(config, layer_idx)

    def mix(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: Cache | None = None,
            **kwargs) -> torch.Tensor:
        return self.mamba(hidden_states, padding_mask=attention_mask, cache=cache)


def make_decoder_layer(config: NanoGPTConfig, layer_idx: int) -> NanoGPTDecoderLayer:
    """Layer `layer_idx` with the token mixer `config.layer_types` gives it."""
    if config.layer_types[layer_idx] == "linear_attention":
        return NanoGPTMambaDecoderLayer(config, layer_idx)
    return NanoGPTDecoderLayer(config, layer_idx)


__all__ = ["NanoGPTAttention", "NanoGPTDecoderLayer", "NanoGPTGatedMLP", "NanoGPTMLP", "NanoGPTMambaDecoderLayer",
           "NanoGPTRMSNorm", "NanoGPTRotaryEmbedding", "apply_rotary", "eager_attention_forward", "make_decoder_layer",
           "make_norm", "repeat_kv", "tag"]
