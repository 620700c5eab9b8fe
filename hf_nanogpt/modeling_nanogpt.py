"""NanoGPT: nanochat's GPT (and nanoGPT's GPT-2) as a Hugging Face `PreTrainedModel`.

Notable features (nanochat master with `NanoGPTConfig.nanochat()` / `from_depth`, each a config switch):
- rotary position embeddings with base 100000, no position table (`position_embedding="learned"`: GPT-2)
- QK-norm: queries and keys RMS-normalised per head after the rotary rotation, then scaled by 1.2
- parameter-free RMSNorm, also right after the token embedding (`norm_type="layernorm"` for GPT-2)
- smear: a gated share of the previous token's normed embedding is added to each token's
- per-layer residual scalars: `x = resid_lambda[i] * x + x0_lambda[i] * x0` before block i
- value embeddings (ResFormer) on alternating layers, gated per key/value head
- ReLU^2 MLP, 4x wide (GELU and SwiGLU are alternatives)
- grouped-query attention (`num_key_value_heads`) and a sliding-window layer pattern ("SSSL", last layer full)
- backout: the residual stream after block L // 2, scaled, is subtracted before the final norm
- hybrids: Mamba-2 layers in place of attention (`layer_types` "linear_attention", `mamba_nanogpt.py`) and
  Mixture-of-Experts MLPs (`mlp_layer_types` "moe", `moe_nanogpt.py`; router logits as `output_router_logits`,
  the router losses added to `loss`)
- no biases, untied token embedding and LM head, vocabulary padded to a multiple of 64 (logits cropped
  back), logits soft-capped at 15 in float32 (`c * tanh(x / c)`)

The Hugging Face contract: attention through `ALL_ATTENTION_FUNCTIONS` (eager, sdpa, flex, flash),
`Cache` objects (dynamic, static, sliding layers; smear's previous-token state lives in the cache too,
see `cache_nanogpt.py`), `generate()`, `CausalLMOutputWithPast`, `labels` with -100 ignored,
`logits_to_keep`, gradient checkpointing, `output_hidden_states` / `output_attentions`. The blocks are
in `blocks_nanogpt.py`; architecture variants are picked once, when modules are built, never
re-decided in `forward`.

This file travels as remote code next to saved checkpoints, so it imports only torch, transformers
and its single-dot siblings.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import (BaseModelOutputWithPast, CausalLMOutputWithPast, MoeCausalLMOutputWithPast,
                                           MoeModelOutputWithPast)
from transformers.modeling_utils import PreTrainedModel
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .blocks_nanogpt import (NanoGPTAttention, NanoGPTDecoderLayer, NanoGPTRotaryEmbedding, make_decoder_layer,
                             make_norm, tag)
from .cache_nanogpt import model_state_layer
from .compat_nanogpt import CACHE_NAME, cache_kwargs, check_transformers_version, pick_cache, positions_from_mask
from .configuration_nanogpt import SMEAR_GATE_CHANNELS, NanoGPTConfig
from .loss_nanogpt import causal_lm_loss, fused_causal_lm_loss, shift_targets
from .mamba_nanogpt import NanoGPTGatedRMSNorm, NanoGPTMamba
from .moe_nanogpt import NanoGPTExperts, NanoGPTRouter, router_losses

check_transformers_version()  # a clear warning at load on an untested transformers release

# ----------------------------------------------------------------------------- pretrained base


class NanoGPTPreTrainedModel(PreTrainedModel):
    config_class = NanoGPTConfig
    config: NanoGPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NanoGPTDecoderLayer", "NanoGPTMambaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]  # the name before and after 5.24
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": NanoGPTDecoderLayer,
        "attentions": NanoGPTAttention,
        "router_logits": OutputRecorder(NanoGPTRouter, index=0),  # (B * T, E) per MoE layer
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """One place for every init scale. With d = hidden_size, L = num_hidden_layers, u(a) = uniform(-a, a),
        s = sqrt(3 / d) (a uniform with the std of normal(0, 1/sqrt(d)), without its tails):

        | parameter (init_role)                  | "nanochat"        | "nanochat_jan2026" | "gpt2"             |
        |----------------------------------------|-------------------|--------------------|--------------------|
        | embed_tokens ("token_embedding")       | normal(0, 0.8)    | normal(0, 1)       | normal(0, 0.02)    |
        | embed_positions ("position_embedding") | normal(0, 0.02)   | normal(0, 0.02)    | normal(0, 0.02)    |
        | q/k/v_proj ("input")                   | u(s)              | u(s)               | normal(0, 0.02)    |
        | up/gate_proj ("mlp_input")             | u(0.4 s)          | u(s)               | normal(0, 0.02)    |
        | o_proj, down_proj ("residual")         | zeros             | zeros              | normal(0, 0.02/sqrt(2L)) |
        | lm_head ("lm_head", untied)            | normal(0, 0.001)  | normal(0, 0.001)   | normal(0, 0.02)    |
        | value_embeds ("value_embedding")       | u(s)              | u(s)               | u(s)               |
        | ve_gate, smear_gate                    | uniform(0, 0.02)  | uniform(0, 0.02)   | uniform(0, 0.02)   |
        | resid_lambdas[i]                       | 1.15 - 0.10 i/(L-1) | 1.0              | (absent)           |
        | x0_lambdas[i]                          | 0.20 - 0.15 i/(L-1) | 0.1              | (absent)           |
        | smear_lambda / backout_lambda          | 0 / 0.2           | 0 / 0.2            | 0 / 0.2            |
        | biases / LayerNorm                     | zeros / ones, zeros | zeros / ones, zeros | zeros / ones, zeros |
        | experts.up_proj / down_proj (3-D)      | as up / down_proj, per expert (fan-in d resp. h)              |
        | router gate ("router")                 | normal(0, 0.02)   | normal(0, 0.02)    | normal(0, 0.02)    |
        | Mamba in_proj / out_proj               | as q_proj / o_proj ("input" / "residual")                     |
        | Mamba conv1d weight / bias             | u(1/sqrt(K)) / zeros (torch's Conv1d bound, K taps)           |
        | Mamba A_log, D, dt_bias; norm weight   | log(1..H), 1, softplus^-1(logu(1e-3, 0.1)); ones (Mamba-2)    |

        nanochat zero-inits the residual projections so every block starts as the identity map, and starts
        the gates small and positive (value embeddings and smear slightly on, smear_lambda 0 keeps smear
        off until it is learned). The rows of a "nanochat" table are nanochat master's (gpt.py
        `init_weights`); the parts only nanochat master has use its values under every scheme.
        transformers calls this once per module that owns parameters (a parent without direct
        parameters is skipped for remote code), so each Linear/Embedding carries its `init_role`
        from construction. The `transformers.initialization` helpers skip tensors that
        `from_pretrained` already loaded.
        """
        cfg = self.config
        scheme = cfg.init_scheme
        nanochat = scheme != "gpt2"
        std = cfg.initializer_range
        role = getattr(module, "init_role", None)
        bound = math.sqrt(3.0 / cfg.hidden_size)
        if isinstance(module, nn.Linear):
            if role == "router":  # small, so routing starts near uniform but not tied
                init.normal_(module.weight, mean=0.0, std=0.02)
            elif role in ("ve_gate", "smear_gate"):
                init.uniform_(module.weight, 0.0, 0.02)
            elif role == "residual":
                if nanochat:
                    init.zeros_(module.weight)
                else:  # GPT-2: scale residual projections by 1/sqrt(number of residual additions)
                    init.normal_(module.weight, mean=0.0, std=std / math.sqrt(2 * cfg.num_hidden_layers))
            elif role == "lm_head":
                init.normal_(module.weight, mean=0.0, std=0.001 if nanochat else std)
            elif nanochat:  # "input" / "mlp_input": uniform with the std of normal(0, 1/sqrt(fan_in))
                scale = 0.4 if role == "mlp_input" and scheme == "nanochat" else 1.0
                fan_bound = math.sqrt(3.0 / module.in_features)
                init.uniform_(module.weight, -scale * fan_bound, scale * fan_bound)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            if role == "value_embedding":
                init.uniform_(module.weight, -bound, bound)
            elif role == "token_embedding" and nanochat:
                init.normal_(module.weight, mean=0.0, std=0.8 if scheme == "nanochat" else 1.0)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, NanoGPTExperts):
            for w, residual in ((module.up_proj, False), (module.down_proj, True)):  # (E, out, in) each
                if residual and nanochat:
                    init.zeros_(w)
                elif residual:
                    init.normal_(w, mean=0.0, std=std / math.sqrt(2 * cfg.num_hidden_layers))
                elif nanochat:
                    a = (0.4 if scheme == "nanochat" else 1.0) * math.sqrt(3.0 / w.shape[-1])
                    init.uniform_(w, -a, a)
                else:
                    init.normal_(w, mean=0.0, std=std)
        elif isinstance(module, nn.Conv1d):  # the Mamba mixer's depthwise conv
            bound = 1.0 / math.sqrt(module.kernel_size[0])
            init.uniform_(module.weight, -bound, bound)
            init.zeros_(module.bias)
        elif isinstance(module, NanoGPTMamba):
            for name, value in module.initial_ssm_parameters().items():
                init.copy_(getattr(module, name), value)
        elif isinstance(module, NanoGPTRouter):  # the balancing bias starts neutral
            init.zeros_(module.expert_bias)
        elif isinstance(module, NanoGPTGatedRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, NanoGPTRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq(module.inv_freq.device))
        elif isinstance(module, NanoGPTModel):
            if module.resid_lambdas is not None:
                n = cfg.num_hidden_layers
                if scheme == "nanochat":  # stronger residual and more x0 early, weaker deep (nanochat master)
                    ramp = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)
                    init.copy_(module.resid_lambdas, 1.15 - 0.10 * ramp)
                    init.copy_(module.x0_lambdas, 0.20 - 0.15 * ramp)
                else:
                    init.ones_(module.resid_lambdas)
                    init.constant_(module.x0_lambdas, 0.1)
            if module.smear_lambda is not None:
                init.zeros_(module.smear_lambda)
            if module.backout_lambda is not None:
                init.constant_(module.backout_lambda, 0.2)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """transformers' resize (token embedding and LM head get the new number of rows, `vocab_size`
        follows), extended to the value embeddings. transformers' contract is rows == `vocab_size`, so
        the tables are unpadded afterwards (`pad_vocab_size_to=1`; use `pad_to_multiple_of` to pad)."""
        base, vocab = self.base_model, self.config.vocab_size
        if new_num_tokens is not None and base.embed_tokens.weight.shape[0] != vocab:
            # drop the padding rows first (never predicted, never looked up), so the rows transformers adds
            # are the new tokens' and get its mean-resized init
            super().resize_token_embeddings(vocab, mean_resizing=False)
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        rows = embeddings.weight.shape[0]
        for key, table in (base.value_embeds or {}).items():  # resized in place: the init_role tag stays
            if table.weight.shape[0] > vocab:
                table = self._get_resized_embeddings(table, vocab, mean_resizing=False)
            base.value_embeds[key] = self._get_resized_embeddings(table, rows, mean_resizing=mean_resizing)
        self.config.pad_vocab_size_to = 1
        return embeddings


# ----------------------------------------------------------------------------- models


class NanoGPTModel(NanoGPTPreTrainedModel):
    """The transformer trunk: embeddings -> smear -> blocks -> backout -> final norm; returns hidden
    states and the cache."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__(config)
        rows, d = config.padded_vocab_size, config.hidden_size
        self.embed_tokens = tag(nn.Embedding(rows, d), "token_embedding")
        # Position information: a learned table (GPT-2) or rotary tables applied inside attention.
        learned = config.position_embedding == "learned"
        self.embed_positions = (tag(nn.Embedding(config.max_position_embeddings, d), "position_embedding")
                                if learned else None)
        self.rotary_emb = None if learned else NanoGPTRotaryEmbedding(config)
        self.embed_norm = make_norm(config, d) if config.embedding_norm else nn.Identity()
        self.embed_dropout = nn.Dropout(config.dropout)
        # Smear (nanochat master): x[t] += smear_lambda * sigmoid(W x[t, :24]) * x[t-1], a cheap bigram feature.
        self.smear_gate = tag(nn.Linear(SMEAR_GATE_CHANNELS, 1, bias=False), "smear_gate") if config.smear else None
        self.smear_lambda = nn.Parameter(torch.zeros(1)) if config.smear else None
        # Value embeddings (ResFormer): a (padded vocab, n_kv * hd) table per layer that has one, keyed by index.
        kv_width = config.num_key_value_heads * config.head_dim
        ve_layers = config.value_embedding_layers
        self.value_embeds = (nn.ModuleDict({str(i): tag(nn.Embedding(rows, kv_width), "value_embedding")
                                            for i in ve_layers}) if ve_layers else None)
        self.ve_keys = [str(i) if i in ve_layers else None for i in range(config.num_hidden_layers)]
        self.layers = nn.ModuleList(make_decoder_layer(config, i) for i in range(config.num_hidden_layers))
        # Backout (nanochat master): subtract a learned share of the stream after block L // 2 at the end.
        self.backout_lambda = nn.Parameter(torch.full((1,), 0.2)) if config.backout else None
        self.backout_layer = config.backout_layer
        self.norm = make_norm(config, d)
        if config.residual_scalars:
            self.resid_lambdas = nn.Parameter(torch.ones(config.num_hidden_layers))
            self.x0_lambdas = nn.Parameter(torch.full((config.num_hidden_layers,), 0.1))
        else:
            self.resid_lambdas = self.x0_lambdas = None
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        # MoE models return the Moe* outputs (with `router_logits`); dense ones the plain classes, unchanged
        self.output_class = MoeModelOutputWithPast if "moe" in config.mlp_layer_types else BaseModelOutputWithPast
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def smear(self, x: torch.Tensor, position_ids: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        """x (B, T, d) normed embeddings -> x[t] + smear_lambda * sigmoid(W x[t, :24]) * x[t-1].

        The previous token of the first position comes from the cache (the last token of the previous
        call; none at the start), so chunked prefill and token-by-token decoding equal one full pass. A
        token at position 0 starts its sequence and smears nothing in: that is nanochat's first token, and
        the first real token of a left-padded row (whose positions count from its first real token), so
        a padded row computes what the same row computes alone, whatever mask form the caller passes.
        """
        if cache is not None:  # (B, d, 1 + T): the previous call's last token, then this call's tokens
            window = model_state_layer(cache, self.config.num_hidden_layers).update_conv_state(
                x.transpose(1, 2), conv_kernel_size=1)
            prev = window[..., :-1].transpose(1, 2)  # (B, T, d)
        else:
            prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # (B, T, d)
        prev = prev.masked_fill((position_ids == 0)[..., None], 0.0)  # (B or 1, T, 1) sequence starts
        gate = self.smear_lambda.to(x.dtype) * torch.sigmoid(self.smear_gate(x[..., :SMEAR_GATE_CHANNELS]))
        return x + gate * prev  # gate (B, T, 1)

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
        releases); it is returned under the name of the installed release. Value embeddings are looked
        up by token id, so a model with them needs `input_ids`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("NanoGPTModel.forward: pass exactly one of input_ids or inputs_embeds")
        if input_ids is None and self.value_embeds is not None:
            raise ValueError("NanoGPTModel.forward: this model has value embeddings (looked up by token id); "
                             "pass input_ids, not inputs_embeds")
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
        if "linear_attention" not in mask_by_type:  # Mamba layers: the 2-D padding mask of this call's tokens
            pad = attention_mask if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2 else None
            mask_by_type["linear_attention"] = pad[:, -inputs_embeds.shape[1]:] if pad is not None else None

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.embed_positions is not None:
            # Pad tokens of left-padded rows may carry out-of-range positions; clamp them into the table.
            pos = position_ids.clamp(0, self.config.max_position_embeddings - 1)
            hidden_states = hidden_states + self.embed_positions(pos)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)  # 2 x (B, T, hd/2)
        hidden_states = self.embed_dropout(self.embed_norm(hidden_states))
        if self.smear_gate is not None:
            hidden_states = self.smear(hidden_states, position_ids, cache)
        x0 = hidden_states  # the normalised input embedding (after smear), mixed back in by the residual scalars

        kept = None  # backout: the residual stream after block L // 2
        for i, layer in enumerate(self.layers):
            if self.resid_lambdas is not None:
                hidden_states = self.resid_lambdas[i] * hidden_states + self.x0_lambdas[i] * x0
            ve = self.value_embeds[self.ve_keys[i]](input_ids) if self.ve_keys[i] is not None else None  # (B, T, kv)
            hidden_states = layer(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=mask_by_type[self.config.layer_types[i]],
                cache=cache,
                value_embedding=ve,
                **kwargs,
            )
            if i == self.backout_layer:
                kept = hidden_states
        if kept is not None:  # remove the low-level features of the middle of the network before the head
            hidden_states = hidden_states - self.backout_lambda.to(hidden_states.dtype) * kept
        hidden_states = self.norm(hidden_states)
        return self.output_class(last_hidden_state=hidden_states, **cache_kwargs(cache if use_cache else None))


@dataclass
class NanoGPTCausalLMOutput(CausalLMOutputWithPast):
    """`CausalLMOutputWithPast` plus `loss_terms`: each part of `loss` (`ce`, then the extra terms of
    `loss_terms`), detached 0-d tensors that sum to `loss`."""

    loss_terms: dict[str, torch.Tensor] | None = None


@dataclass
class NanoGPTMoeCausalLMOutput(MoeCausalLMOutputWithPast):
    """`MoeCausalLMOutputWithPast` plus `loss_terms` (as `NanoGPTCausalLMOutput`; `router` is the weighted
    router loss)."""

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
        self.lm_head = tag(nn.Linear(config.hidden_size, config.padded_vocab_size, bias=False), "lm_head")
        self.has_moe = "moe" in config.mlp_layer_types
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
        output_router_logits: bool | None = None,
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

        A model with MoE layers returns a `NanoGPTMoeCausalLMOutput` and adds its router losses
        (`router_losses`) to `loss` whenever targets are given in training mode or `output_router_logits` is on
        (config or argument), and returns them as `aux_loss` (and the `router` part of `loss_terms`) with the
        per-layer `router_logits`. Under `num_items_in_batch` they are weighted by this call's share of the
        targets, so accumulated micro-batches add up to one batch's coefficient.
        """
        num_items = kwargs.pop("num_items_in_batch", None)  # the loss's divisor, not a trunk argument
        has_targets = labels is not None or shift_labels is not None
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        output_router_logits = self.has_moe and (output_router_logits or (self.training and has_targets))
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_router_logits=output_router_logits,
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
        if skip_logits:  # head + crop + softcap + loss in blocks, no (B, T, V) logits (loss_nanogpt.py)
            if targets is None:
                raise ValueError("skip_logits=True needs labels or shift_labels: it only computes the loss")
            loss, parts = fused_causal_lm_loss(hidden_states, self.lm_head.weight, targets, num_items, loss_terms,
                                               softcap=cap, vocab_size=self.config.vocab_size)
        else:
            logits = self.lm_head(hidden_states)  # (B, T', padded V)
            if logits.shape[-1] != self.config.vocab_size:  # padding rows are never predicted: crop before the cap
                logits = logits[..., : self.config.vocab_size]
            if cap is not None:  # soft cap (Gemma 2 / nanochat), in float32
                logits = cap * torch.tanh(logits.float() / cap)
            if targets is not None:
                loss, parts = causal_lm_loss(logits, targets, num_items, loss_terms)
        moe = {}  # the Moe* output's extra fields
        if self.has_moe:
            moe = dict(aux_loss=None, router_logits=outputs.router_logits if output_router_logits else None)
        if output_router_logits and outputs.router_logits:
            aux_loss = moe["aux_loss"] = router_losses(outputs.router_logits, self.config, attention_mask)
            if loss is not None:
                share = 1.0
                if num_items is not None:  # this micro-batch's share of the targets
                    share = (targets != -100).sum() / num_items
                router = share * aux_loss.to(loss.device)
                loss = loss + router
                if parts is not None:  # the parts still sum to the loss
                    parts = {**parts, "router": router.detach()}
        return (NanoGPTMoeCausalLMOutput if self.has_moe else NanoGPTCausalLMOutput)(
            loss=loss,
            **moe,
            logits=logits,
            **cache_kwargs(getattr(outputs, CACHE_NAME)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            loss_terms=parts,
        )

    # ------------------------------------------------------------------ accounting
    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts by role (each shared tensor counted once):

        - `embedding`: token (and learned position) tables; `value_embeds`: the value-embedding tables;
        - `lm_head`: the output projection (0 when tied to the embedding);
        - `matrices`: 2-D weights inside the blocks (value-embedding gates included, as nanochat counts) and
          the 3-D expert weights;
        - `scalars`: everything else (norm weights, biases, residual/smear/backout scalars, the smear gate,
          Mamba's A_log / D / dt_bias / conv);
        - `total`;
        - `active`: `total` minus the experts a token does not use (E - k routed experts per MoE layer);
        - `scaling`: nanochat's scaling-law count, the *active* `matrices` + the LM head matrix (counted even
          when tied: it still does the output matmul). Its training horizon is `target_param_data_ratio x
          scaling`, so an MoE model is planned by the compute per token, not by its stored size.
        """
        embedding = sum(p.numel() for n, p in self.named_parameters() if n.startswith("model.embed_"))
        value_embeds = sum(p.numel() for p in self.model.value_embeds.parameters()) if self.model.value_embeds else 0
        head = 0 if self.config.tie_word_embeddings else self.lm_head.weight.numel()
        matrices = sum(p.numel() for n, p in self.model.layers.named_parameters() if p.ndim == 2)
        cfg = self.config  # each MoE layer stores E + S experts and runs k + S of them per token
        expert_params = sum(p.numel() for m in self.model.layers.modules() if isinstance(m, NanoGPTExperts)
                            for p in m.parameters())
        inactive = expert_params * (cfg.num_experts - cfg.num_experts_per_tok) // max(
            cfg.num_experts + cfg.num_shared_experts, 1)
        matrices += expert_params
        total = sum(p.numel() for p in self.parameters())
        return dict(embedding=embedding, value_embeds=value_embeds, lm_head=head, matrices=matrices,
                    scalars=total - embedding - value_embeds - head - matrices, total=total, active=total - inactive,
                    scaling=matrices - inactive + self.lm_head.weight.numel())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, nanochat's convention (PaLM appendix B, arXiv:2204.02311):
        6 x (active parameters that do matmuls, i.e. all but the embedding tables and the experts a token
        skips) plus the attention term 12 x n_head x head_dim x (keys attended), summed over attention
        layers; a sliding-window layer attends to at most its window. Mamba layers add no attention term (their
        scan is linear in T and left out, as the softmax is). `seq_len` defaults to `max_position_embeddings`."""
        cfg = self.config
        seq_len = seq_len or cfg.max_position_embeddings
        counts = self.parameter_counts()
        matmul_params = counts["active"] - counts["embedding"] - counts["value_embeds"]  # tables are lookups
        if cfg.tie_word_embeddings:  # the shared table still does the output matmul
            matmul_params += self.lm_head.weight.numel()
        attn = sum(12 * cfg.num_attention_heads * cfg.head_dim * min(seq_len, w or seq_len)
                   for w, t in zip(cfg.window_sizes, cfg.layer_types) if t != "linear_attention")
        return 6 * matmul_params + attn

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_nanochat(cls, checkpoint_dir, step: int | None = None, tokenizer_dir=None,
                      **config_overrides) -> "NanoGPTForCausalLM":
        """Load a nanochat checkpoint folder (`model_<step>.pt` + `meta_<step>.json`; `step=None` = the
        newest) into a NanoGPT with the same logits. `tokenizer_dir` (nanochat's, with `tokenizer.pkl`)
        fills in the special-token ids. Needs the `hf_nanogpt` package (`hf_nanogpt.convert_nanochat`);
        `scripts/convert_nanochat.py` writes a complete model folder instead.
        """
        try:  # the converter is package code, not remote code: a folder's copy of this file cannot run it
            from hf_nanogpt.convert_nanochat import load_nanochat_model
        except ImportError as err:
            raise ImportError("NanoGPTForCausalLM.from_nanochat needs the hf_nanogpt package: "
                              "pip install hf_nanogpt") from err
        return load_nanochat_model(checkpoint_dir, step, tokenizer_dir, **config_overrides)

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
