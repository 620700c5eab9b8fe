"""A Mamba-2 token mixer for NanoGPT: the layers whose `config.layer_types[i]` is `"linear_attention"`.

Mamba (Gu & Dao 2023, arXiv:2312.00752) replaces attention by a selective state-space model; Mamba-2 (Dao &
Gu 2024, arXiv:2405.21060) restricts A to a scalar per head, which makes the scan a chunked matmul (SSD).
Per layer, with d = hidden_size, I = mamba_expand * d inner channels in H = I / P heads of P = mamba_head_dim,
N = mamba_state_size:

    z, xBC, dt = in_proj(x)                       # (B, T, I), (B, T, I + 2N), (B, T, H)
    x, B, C = silu(causal_depthwise_conv(xBC))    # kernel mamba_conv_kernel along time
    dt = softplus(dt + dt_bias); A = -exp(A_log)  # (B, T, H), (H,)
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t      # (B, H, P, N) per head
    y_t = C_t h_t + D x_t
    out = out_proj(rmsnorm(y * silu(z)))

The layer names follow transformers' `Mamba2Mixer` (in_proj, conv1d, dt_bias, A_log, D, norm, out_proj).

Which code is reused, and why not the whole mixer: the scan itself comes from transformers'
`models/mamba2/modeling_mamba2.py`: `mamba2_chunk_scan` (the chunked SSD scan for training and prefill, with
an initial and a final state) and `mamba2_selective_state_update` (the one-token step for decoding). Both
are pure PyTorch on CPU, keep the same signature in transformers 5.17 to 5.24, and switch to the
`mamba_ssm` CUDA kernels when that package is installed. `Mamba2Mixer` itself is not reused: it needs a
`Mamba2Config`, reads its cache through calls that changed between 5.17 (`cache_params.layers[i]...`) and
5.24 (`cache.get_conv_state(i)`), and its gated norm's signature changed as well. Here the conv and SSM
states live in this package's `NanoGPTStateLayer` (cache_nanogpt.py), which also has the batch operations
`hf_nanogpt.engine` uses (fan-out of a prefill, dropping finished rows), so `generate()` and the engine
decode a hybrid model from the cache exactly as they decode an attention-only one.

Padding (left-padded batches): padded positions are zeroed before the projection and after the conv, so a
row's state stays zero until its first real token and a padded row computes what it computes alone.

This file travels as remote code with the modeling file: torch and transformers imports only.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan, mamba2_selective_state_update

from .cache_nanogpt import decoder_state_layer
from .configuration_nanogpt import NanoGPTConfig

# State slots of a Mamba layer's cache entry: the conv window and the SSM state.
CONV_STATE, SSM_STATE = 0, 1
# Mamba-2's dt initialisation range (log-uniform), before the inverse softplus into dt_bias.
DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


class NanoGPTGatedRMSNorm(nn.Module):
    """Mamba-2's output norm: rmsnorm(y * silu(z)) * weight, in float32 (one group)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y.float() * F.silu(z.float())
        return self.weight * F.rms_norm(y, (y.shape[-1],), eps=self.eps).to(z.dtype)


class NanoGPTMamba(nn.Module):
    """The Mamba-2 mixer of one layer (see the module docstring); (B, T, d) -> (B, T, d)."""

    def __init__(self, config: NanoGPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        d = config.hidden_size
        self.inner = config.mamba_expand * d
        self.head_dim = config.mamba_head_dim
        self.num_heads = self.inner // self.head_dim
        self.state_size = config.mamba_state_size
        self.conv_kernel = config.mamba_conv_kernel
        self.chunk_size = config.mamba_chunk_size
        self.conv_dim = self.inner + 2 * self.state_size  # x, B, C go through the conv together (one group)
        self.in_proj = nn.Linear(d, self.inner + self.conv_dim + self.num_heads, bias=config.bias)
        self.in_proj.init_role = "input"
        # depthwise causal conv; the causal left padding comes from the cache window (or zeros), not from Conv1d
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.conv_kernel, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.D = nn.Parameter(torch.empty(self.num_heads))
        self.norm = NanoGPTGatedRMSNorm(self.inner, config.norm_eps)
        # the optimizer's "ssm" group (AdamW, no decay): the parameters above, never Muon
        self.init_role = self.conv1d.init_role = self.norm.init_role = "ssm"
        self.out_proj = nn.Linear(self.inner, d, bias=config.bias)
        self.out_proj.init_role = "residual"  # zeros under nanochat's init: the block starts as the identity

    @torch.no_grad()
    def initial_ssm_parameters(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mamba-2's init: A = 1..H (A_log = log A), D = 1, dt log-uniform in [1e-3, 1e-1] stored as
        dt_bias = softplus^-1(dt), so softplus(0 + dt_bias) starts every head at its own time scale."""
        h = self.num_heads
        dt = torch.exp(torch.rand(h, generator=generator) * (torch.log(torch.tensor(DT_MAX / DT_MIN)))
                       + torch.log(torch.tensor(DT_MIN))).clamp(min=DT_FLOOR)
        return dict(A_log=torch.log(torch.arange(1, h + 1, dtype=torch.float32)), D=torch.ones(h),
                    dt_bias=dt + torch.log(-torch.expm1(-dt)))

    def forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """hidden_states (B, T, d); padding_mask (B, T) with 0 at padding, or None; the cache's entry at this
        layer holds the last K - 1 conv inputs (B, I + 2N, K - 1) and the SSM state (B, H, P, N)."""
        b, t, _ = hidden_states.shape
        dtype = hidden_states.dtype
        keep = padding_mask[..., None].to(dtype) if padding_mask is not None else None  # (B, T, 1)
        if keep is not None:
            hidden_states = hidden_states * keep
        z, xbc, dt = self.in_proj(hidden_states).split([self.inner, self.conv_dim, self.num_heads], dim=-1)

        # causal depthwise conv over (the cached K - 1 inputs +) this call's inputs: (B, C, K - 1 + T) -> (B, C, T)
        state = decoder_state_layer(cache, self.layer_idx, number_of_states=2) if cache is not None else None
        xbc = xbc.transpose(1, 2)
        if state is not None:
            window = state.update_conv_state(xbc, CONV_STATE, conv_kernel_size=self.conv_kernel - 1)
        else:
            window = F.pad(xbc, (self.conv_kernel - 1, 0))
        xbc = F.silu(F.conv1d(window, self.conv1d.weight.to(dtype), self.conv1d.bias.to(dtype),
                              groups=self.conv_dim)).transpose(1, 2)  # (B, T, C)
        if keep is not None:
            xbc = xbc * keep
        x, B, C = xbc.split([self.inner, self.state_size, self.state_size], dim=-1)

        A = -torch.exp(self.A_log.float())  # (H,), negative: the state decays
        h, p, n = self.num_heads, self.head_dim, self.state_size
        previous = state is not None and state.has_previous_state[SSM_STATE]
        if previous and t == 1:  # decoding: one recurrence step, the state updated in place
            y = mamba2_selective_state_update(
                state.recurrent_states[SSM_STATE], x.view(b, h, p), dt.view(b, h, 1).expand(b, h, p),
                A[:, None, None].expand(h, p, n), B.view(b, 1, n), C.view(b, 1, n), self.D[:, None].expand(h, p),
                dt_bias=self.dt_bias[:, None].expand(h, p), dt_softplus=True)  # (B, H, P)
        else:  # training / prefill: the chunked scan, continuing from the cached state if there is one
            y = mamba2_chunk_scan(
                x.reshape(b, t, h, p), dt, A, B.reshape(b, t, 1, n), C.reshape(b, t, 1, n), self.chunk_size, D=self.D,
                dt_bias=self.dt_bias, initial_states=state.recurrent_states[SSM_STATE] if previous else None,
                dt_softplus=True, return_final_states=state is not None)  # (B, T, H, P) [, (B, H, P, N)]
            if state is not None:
                y, final = y
                state.update_recurrent_state(final.float(), SSM_STATE)
        y = self.norm(y.reshape(b, t, self.inner), z)
        return self.out_proj(y.to(dtype))


__all__ = ["NanoGPTGatedRMSNorm", "NanoGPTMamba"]
