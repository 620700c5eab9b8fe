"""NanoGPT: nanochat's GPT (and nanoGPT's GPT-2) as a Hugging Face `PreTrainedModel`.

Notable features (nanochat defaults, each switchable in `NanoGPTConfig`):
- rotary position embeddings, no position table (`position_embedding="learned"` gives GPT-2's table)
- QK-norm: queries and keys RMS-normalised per head after the rotary rotation
- parameter-free RMSNorm, also right after the token embedding (`norm_type="layernorm"` for GPT-2)
- ReLU^2 MLP, 4x wide (GELU and SwiGLU are alternatives)
- no biases, untied token embedding and LM head, logits soft-capped at 15 (`c * tanh(x / c)`)
- per-layer residual scalars: `x = resid_lambda[i] * x + x0_lambda[i] * x0` before block i
- grouped-query attention (`num_key_value_heads`) and a sliding-window layer pattern ("SSSL")

The Hugging Face contract: attention through `ALL_ATTENTION_FUNCTIONS` (eager, sdpa, flex, flash),
`Cache` objects (dynamic, static, sliding layers), `generate()`, `CausalLMOutputWithPast`, `labels`
with -100 ignored, `logits_to_keep`, gradient checkpointing, `output_hidden_states` /
`output_attentions`. Architecture variants are picked once, when modules are built (the small
`_make_*` factories below), never re-decided in `forward`.

This file travels as remote code next to saved checkpoints, so it imports only torch, transformers
and `.configuration_nanogpt`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .compat_nanogpt import CACHE_NAME, cache_kwargs, check_transformers_version, pick_cache, positions_from_mask
from .configuration_nanogpt import NanoGPTConfig
from .loss_nanogpt import causal_lm_loss, fused_causal_lm_loss, shift_targets

check_transformers_version()  # a clear warning at load on an untested transformers release

# ----------------------------------------------------------------------------- building blocks


class NanoGPTRMSNorm(nn.Module):
    """Parameter-free RMSNorm (nanochat): x / rms(x). `F.rms_norm` accumulates in float32 for bf16 input
    itself, so no float32 copy of x (and none back) is made."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def _make_norm(config: NanoGPTConfig, dim: int) -> nn.Module:
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
        return freqs.cos().to(x.dtype), freqs.sin().to(x.dtype)


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
    """Causal self-attention with grouped-query heads, rotary positions, QK-norm and an optional
    sliding window; the kernel is whatever `config._attn_implementation` names."""

    def __init__(self, config: NanoGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = config.dropout
        # HF convention: window size in tokens including the current one; None = full attention.
        self.sliding_window = config.window_sizes[layer_idx]

        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.bias)
        self.o_proj = _tag(nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias), "residual")
        # QK-norm (https://arxiv.org/abs/2302.05442) keeps attention logits bounded without a scale search.
        self.q_norm = _make_norm(config, self.head_dim) if config.qk_norm else nn.Identity()
        self.k_norm = _make_norm(config, self.head_dim) if config.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        bsz, seq_len, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(bsz, seq_len, -1, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(hidden_states).view(bsz, seq_len, -1, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(hidden_states).view(bsz, seq_len, -1, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        if position_embeddings is not None:  # rotary configs only; learned positions were added to x
            cos, sin = position_embeddings
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = self.q_norm(q), self.k_norm(k)  # nanochat order: rotate, then normalise

        if cache is not None:  # append this step's keys/values; get the whole history back
            k, v = cache.update(k, v, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
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
        out = out.reshape(bsz, seq_len, -1).contiguous()  # (B, T, nh * hd)
        return self.resid_dropout(self.o_proj(out)), weights


class NanoGPTMLP(nn.Module):
    """Position-wise MLP: down(act(up(x))) with ReLU^2 (nanochat) or GELU (GPT-2)."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.down_proj = _tag(nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias), "residual")
        self.act = _make_activation(config.hidden_act)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.up_proj(x))))


class NanoGPTGatedMLP(nn.Module):
    """SwiGLU MLP (https://arxiv.org/abs/2002.05202): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.bias)
        self.down_proj = _tag(nn.Linear(config.intermediate_size, config.hidden_size, bias=config.bias), "residual")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class ReLUSquared(nn.Module):
    """relu(x)^2 (Primer, https://arxiv.org/abs/2109.08668), nanochat's MLP nonlinearity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def _make_activation(name: str) -> nn.Module:
    return {"relu2": ReLUSquared, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}[name]()


def _make_mlp(config: NanoGPTConfig) -> nn.Module:
    return NanoGPTGatedMLP(config) if config.hidden_act == "swiglu" else NanoGPTMLP(config)


class NanoGPTDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: NanoGPTConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = _make_norm(config, config.hidden_size)
        self.self_attn = NanoGPTAttention(config, layer_idx)
        self.post_attention_layernorm = _make_norm(config, config.hidden_size)
        self.mlp = _make_mlp(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_out, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attn_out
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


# ----------------------------------------------------------------------------- pretrained base


class NanoGPTPreTrainedModel(PreTrainedModel):
    config_class = NanoGPTConfig
    config: NanoGPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NanoGPTDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]  # the name before and after 5.24
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": NanoGPTDecoderLayer,
        "attentions": NanoGPTAttention,
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """One place for every init scale. With d = hidden_size, L = num_hidden_layers:

        | parameter (init_role)              | "nanochat"                          | "gpt2"                     |
        |------------------------------------|-------------------------------------|----------------------------|
        | embed_tokens ("token_embedding")   | normal(0, 1)                        | normal(0, 0.02)            |
        | embed_positions ("position_embedding") | normal(0, 0.02)                 | normal(0, 0.02)            |
        | q/k/v_proj, gate/up_proj ("input") | uniform(+-sqrt(3/d)), std 1/sqrt(d) | normal(0, 0.02)            |
        | o_proj, down_proj ("residual")     | zeros                               | normal(0, 0.02 / sqrt(2L)) |
        | lm_head ("lm_head", untied)        | normal(0, 0.001)                    | normal(0, 0.02)            |
        | resid_lambdas / x0_lambdas         | 1.0 / 0.1                           | (absent)                   |
        | biases / LayerNorm                 | zeros / ones, zeros                 | zeros / ones, zeros        |

        nanochat zero-inits the residual projections so every block starts as the identity map.
        transformers calls this once per module that owns parameters (a parent without direct
        parameters is skipped for remote code), so each Linear/Embedding carries its `init_role`
        from construction. The `transformers.initialization` helpers skip tensors that
        `from_pretrained` already loaded.
        """
        cfg = self.config
        nanochat = cfg.init_scheme == "nanochat"
        std = cfg.initializer_range
        role = getattr(module, "init_role", None)
        if isinstance(module, nn.Linear):
            if role == "residual":
                if nanochat:
                    init.zeros_(module.weight)
                else:  # GPT-2: scale residual projections by 1/sqrt(number of residual additions)
                    init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2 * cfg.num_hidden_layers))
            elif role == "lm_head":
                init.normal_(module.weight, mean=0.0, std=0.001 if nanochat else std)
            elif nanochat:  # "input": uniform with the std of normal(0, 1/sqrt(fan_in)), bounded tails
                bound = math.sqrt(3.0 / module.in_features)
                init.uniform_(module.weight, -bound, bound)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0 if nanochat and role == "token_embedding" else std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, NanoGPTRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(module.inv_freq.device))
        elif isinstance(module, NanoGPTModel) and module.resid_lambdas is not None:
            init.ones_(module.resid_lambdas)
            init.constant_(module.x0_lambdas, 0.1)


def _tag(module: nn.Module, role: str) -> nn.Module:
    """Mark a Linear/Embedding with its init role (read by `_init_weights`)."""
    module.init_role = role
    return module


# ----------------------------------------------------------------------------- models


class NanoGPTModel(NanoGPTPreTrainedModel):
    """The transformer trunk: embeddings -> blocks -> final norm; returns hidden states and the cache."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__(config)
        self.embed_tokens = _tag(nn.Embedding(config.vocab_size, config.hidden_size), "token_embedding")
        # Position information: a learned table (GPT-2) or rotary tables applied inside attention.
        learned = config.position_embedding == "learned"
        self.embed_positions = (_tag(nn.Embedding(config.max_position_embeddings, config.hidden_size), "position_embedding")
                                if learned else None)
        self.rotary_emb = None if learned else NanoGPTRotaryEmbedding(config)
        self.embed_norm = _make_norm(config, config.hidden_size) if config.embedding_norm else nn.Identity()
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(NanoGPTDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = _make_norm(config, config.hidden_size)
        if config.residual_scalars:
            self.resid_lambdas = nn.Parameter(torch.ones(config.num_hidden_layers))
            self.x0_lambdas = nn.Parameter(torch.full((config.num_hidden_layers,), 0.1))
        else:
            self.resid_lambdas = self.x0_lambdas = None
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | dict | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Run the trunk on `input_ids` (B, T) or `inputs_embeds` (B, T, d); returns (B, T, d) states.

        The KV cache may come as `cache` (transformers >= 5.24) or `past_key_values` (earlier
        releases); it is returned under the name of the installed release.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("NanoGPTModel.forward: pass exactly one of input_ids or inputs_embeds")
        cache = pick_cache(cache, past_key_values)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, d)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:  # from the padding mask (left-padded batches), else past_seen + arange(T)
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = positions_from_mask(attention_mask, inputs_embeds.shape[1], past_seen, inputs_embeds.device)

        # `generate()` may hand over masks already built per layer type; otherwise build them here.
        if not isinstance(mask_by_type := attention_mask, dict):
            mask_kwargs = dict(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               position_ids=position_ids, **cache_kwargs(cache))
            mask_by_type = {"full_attention": create_causal_mask(**mask_kwargs)}
            if self.has_sliding_layers:
                mask_by_type["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.embed_positions is not None:
            # Pad tokens of left-padded rows may carry out-of-range positions; clamp them into the table.
            pos = position_ids.clamp(0, self.config.max_position_embeddings - 1)
            hidden_states = hidden_states + self.embed_positions(pos)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)  # 2 x (B, T, hd/2)
        hidden_states = self.embed_dropout(self.embed_norm(hidden_states))
        x0 = hidden_states  # the normalised input embedding, mixed back in by the residual scalars

        for i, layer in enumerate(self.layers):
            if self.resid_lambdas is not None:
                hidden_states = self.resid_lambdas[i] * hidden_states + self.x0_lambdas[i] * x0
            hidden_states = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=mask_by_type[self.config.layer_types[i]],
                cache=cache,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **cache_kwargs(cache if use_cache else None))


@dataclass
class NanoGPTCausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus `loss_terms`: each part of `loss` (`ce`, then the extra terms of
    `loss_terms`), detached 0-d tensors that sum to `loss`."""

    loss_terms: dict[str, torch.Tensor] | None = None


class NanoGPTForCausalLM(NanoGPTPreTrainedModel, GenerationMixin):
    """NanoGPT with a language-modelling head; the class `AutoModelForCausalLM` resolves to."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: NanoGPTConfig):
        super().__init__(config)
        self.model = NanoGPTModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = _tag(nn.Linear(config.hidden_size, config.vocab_size, bias=False), "lm_head")
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        shift_labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        skip_logits: bool = False,
        loss_terms: dict[str, float] | None = None,
        **kwargs,
    ) -> "NanoGPTCausalLMOutput":
        """Logits (B, T', V) for the kept positions, and the mean cross-entropy when targets are given.

        Targets come either as `labels` (Hugging Face convention: aligned with `input_ids`, shifted
        here) or as `shift_labels` (nanoGPT convention: already the next token at each position).
        `-100` marks ignored targets. `num_items_in_batch` in kwargs turns the mean into a sum divided
        by that count, which makes gradient accumulation over uneven micro-batches exact.
        `loss_terms` adds terms of `loss_nanogpt.LOSS_TERMS` with their coefficients, e.g.
        `{"z_loss": 1e-4}`; `loss_terms` in the output holds each part of the loss. `skip_logits=True`
        (training) computes the loss without materialising logits (`logits` is then None): the fused,
        blocked head + softcap + cross-entropy of `loss_nanogpt.fused_causal_lm_loss`.
        """
        num_items = kwargs.pop("num_items_in_batch", None)  # the loss's divisor, not a trunk argument
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        # Keep only the positions whose logits are needed (generation needs the last one).
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        targets = shift_labels if shift_labels is not None else (shift_targets(labels) if labels is not None else None)
        cap = self.config.final_logit_softcapping
        logits = loss = parts = None
        if skip_logits:  # head + softcap + loss in blocks, no (B, T, V) logits (loss_nanogpt.py)
            if targets is None:
                raise ValueError("skip_logits=True needs labels or shift_labels: it only computes the loss")
            loss, parts = fused_causal_lm_loss(hidden_states, self.lm_head.weight, targets, num_items, loss_terms,
                                               softcap=cap, vocab_size=self.vocab_size)
        else:
            logits = self.lm_head(hidden_states)  # (B, T', V)
            if cap is not None:  # soft cap (Gemma 2 / nanochat), in float32
                logits = cap * torch.tanh(logits.float() / cap)
            if targets is not None:
                loss, parts = causal_lm_loss(logits, targets, num_items, loss_terms, vocab_size=self.vocab_size)
        return NanoGPTCausalLMOutput(
            loss=loss,
            logits=logits,
            **cache_kwargs(getattr(outputs, CACHE_NAME)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            loss_terms=parts,
        )

    # ------------------------------------------------------------------ accounting
    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by role: `embedding` (token + position tables), `lm_head` (0 when tied),
        `matrices` (2-D weights inside the blocks), `scalars` (norm weights, biases, residual
        scalars) and `total` (each shared tensor counted once)."""
        embedding = sum(p.numel() for n, p in self.named_parameters() if n.startswith("model.embed_"))
        head = 0 if self.config.tie_word_embeddings else self.lm_head.weight.numel()
        matrices = sum(p.numel() for n, p in self.model.layers.named_parameters() if p.ndim == 2)
        total = sum(p.numel() for p in self.parameters())
        return dict(embedding=embedding, lm_head=head, matrices=matrices,
                    scalars=total - embedding - head - matrices, total=total)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, nanochat's convention (PaLM appendix B, arXiv:2204.02311):
        6 x (parameters that do matmuls, i.e. all but the embedding tables) plus the attention term
        12 x n_head x head_dim x (keys attended), summed over layers; a sliding-window layer attends
        to at most its window. `seq_len` defaults to `max_position_embeddings`."""
        cfg = self.config
        seq_len = seq_len or cfg.max_position_embeddings
        counts = self.parameter_counts()
        matmul_params = counts["total"] - counts["embedding"]
        if cfg.tie_word_embeddings:  # the shared table still does the output matmul
            matmul_params += self.lm_head.weight.numel()
        attn = sum(12 * cfg.num_attention_heads * cfg.head_dim * min(seq_len, w or seq_len) for w in cfg.window_sizes)
        return 6 * matmul_params + attn

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_gpt2(cls, gpt2_model: nn.Module, **config_overrides) -> "NanoGPTForCausalLM":
        """Convert a transformers `GPT2LMHeadModel` (any size) into a NanoGPT with identical logits.

        GPT-2 stores projections as `Conv1D` (in, out) matrices with q, k, v fused; they are split and
        transposed into `nn.Linear` layout. Nothing is downloaded: pass a model you already have, e.g.
        `GPT2LMHeadModel.from_pretrained("gpt2")` or one built from a `GPT2Config`.
        """
        g = gpt2_model.config
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if getattr(g, flag, False):
                raise ValueError(f"from_gpt2: GPT-2 config has {flag}=True, which NanoGPT does not implement")
        if not getattr(g, "scale_attn_weights", True):
            raise ValueError("from_gpt2: GPT-2 config has scale_attn_weights=False, which NanoGPT does not implement")
        acts = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu2": "relu2"}
        if g.activation_function not in acts:
            raise ValueError(f"from_gpt2: activation_function={g.activation_function!r} is not one of {sorted(acts)}")
        config = NanoGPTConfig.gpt2(
            vocab_size=g.vocab_size, hidden_size=g.n_embd, num_hidden_layers=g.n_layer,
            num_attention_heads=g.n_head, max_position_embeddings=g.n_positions,
            intermediate_size=g.n_inner or 4 * g.n_embd, norm_eps=g.layer_norm_epsilon,
            hidden_act=acts[g.activation_function], dropout=g.resid_pdrop,
            tie_word_embeddings=getattr(g, "tie_word_embeddings", True),
            bos_token_id=g.bos_token_id, eos_token_id=g.eos_token_id, **config_overrides,
        )
        model = cls(config)
        src = gpt2_model.state_dict()
        d = config.hidden_size
        state = {
            "model.embed_tokens.weight": src["transformer.wte.weight"],
            "model.embed_positions.weight": src["transformer.wpe.weight"],
            "model.norm.weight": src["transformer.ln_f.weight"],
            "model.norm.bias": src["transformer.ln_f.bias"],
            "lm_head.weight": src.get("lm_head.weight", src["transformer.wte.weight"]),
        }
        for i in range(config.num_hidden_layers):
            p, q = f"transformer.h.{i}.", f"model.layers.{i}."
            qkv_w, qkv_b = src[p + "attn.c_attn.weight"], src[p + "attn.c_attn.bias"]  # (d, 3d), (3d,)
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                state[q + f"self_attn.{name}.weight"] = qkv_w[:, j * d:(j + 1) * d].t()
                state[q + f"self_attn.{name}.bias"] = qkv_b[j * d:(j + 1) * d]
            pairs = {"attn.c_proj": "self_attn.o_proj", "mlp.c_fc": "mlp.up_proj", "mlp.c_proj": "mlp.down_proj"}
            for a, b in pairs.items():
                state[q + b + ".weight"] = src[p + a + ".weight"].t()  # Conv1D (in, out) -> Linear (out, in)
                state[q + b + ".bias"] = src[p + a + ".bias"]
            for a, b in {"ln_1": "input_layernorm", "ln_2": "post_attention_layernorm"}.items():
                state[q + b + ".weight"] = src[p + a + ".weight"]
                state[q + b + ".bias"] = src[p + a + ".bias"]
        missing, unexpected = model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"from_gpt2: weight mapping incomplete: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        return model.to(dtype=next(gpt2_model.parameters()).dtype)


__all__ = ["NanoGPTPreTrainedModel", "NanoGPTModel", "NanoGPTForCausalLM"]
