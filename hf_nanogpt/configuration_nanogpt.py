"""NanoGPT configuration: one config for the nanochat family and the nanoGPT / GPT-2 family.

Three presets (`PRESETS`), each a set of field values:

- `"nanochat"` (`NanoGPTConfig.nanochat()`): nanochat's GPT as of its master (92d63d4, 2026-07): rotary
  positions with base 100000, parameter-free RMSNorm (also after the token embedding), QK-norm with a 1.2
  scale, ReLU^2 MLP, no biases, untied embedding and head, vocabulary padded to a multiple of 64, logit
  softcap 15, per-layer residual scalars, smear, value embeddings, backout, the "SSSL" window pattern and
  nanochat's init table.
- `"nanochat_jan2026"` (`NanoGPTConfig.nanochat_jan2026()`): the January-2026 layout (nanochat 184d4c1):
  the same minus smear, value embeddings, backout and the QK scale, rotary base 10000, its init table.
- `"gpt2"` (`NanoGPTConfig.gpt2()`): nanoGPT / GPT-2 (learned positions, LayerNorm with bias, GELU, tied
  embeddings, dropout).

The class defaults (`NanoGPTConfig()`) are the January-2026 layout without vocabulary padding or windows:
what this package built before the nanochat-master features existed. They stay that way on purpose:
a saved `config.json` has no entry for a field added later, so every new switch must default to "off"
for old checkpoints to keep their logits (`tests/golden/nanogpt_76ee8d1` proves it).

Model size comes from one knob, `depth`, through `NanoGPTConfig.from_depth` (nanochat's rule), which
starts from a preset (`"nanochat"` unless told otherwise).

This file travels as remote code next to saved checkpoints: it imports only the standard library and
transformers, and never relies on the `hf_nanogpt` package being installed.
"""

from transformers import PreTrainedConfig

_NORM_TYPES = ("rmsnorm", "layernorm")
_ACTIVATIONS = ("relu2", "gelu", "gelu_tanh", "swiglu")
_POSITION_EMBEDDINGS = ("rope", "learned")
_INIT_SCHEMES = ("nanochat", "nanochat_jan2026", "gpt2")
# Token mixers (`layer_types`): attention, or a Mamba-2 state-space mixer under transformers' name for a
# recurrent layer (its caches build a conv/recurrent-state layer there, as for Jamba's Mamba layers).
_LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")
_PATTERN_LETTERS = {"S": "sliding_attention", "L": "full_attention", "M": "linear_attention"}
_MLP_TYPES = ("dense", "moe")
_ROUTER_ACTIVATIONS = ("softmax", "sigmoid")
_MOE_BALANCING = ("aux_loss", "bias")

# nanochat's fixed widths: the smear gate reads the first 24 channels of the normed embedding, the
# value-embedding gates the first 12 of the block input (both are cheap "which token is this" probes).
SMEAR_GATE_CHANNELS = 24
VE_GATE_CHANNELS = 12

# nanoGPT names -> Hugging Face standard names, so `config.n_layer` etc. keep working.
_ATTRIBUTE_MAP = {
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_kv_head": "num_key_value_heads",
    "n_embd": "hidden_size",
    "block_size": "max_position_embeddings",
    "sequence_len": "max_position_embeddings",
}


_AUTO_MAP = {
    "AutoConfig": "configuration_nanogpt.NanoGPTConfig",
    "AutoModel": "modeling_nanogpt.NanoGPTModel",
    "AutoModelForCausalLM": "modeling_nanogpt.NanoGPTForCausalLM",
}


class NanoGPTConfig(PreTrainedConfig):
    """Configuration of `NanoGPTModel` / `NanoGPTForCausalLM` (`model_type="nanogpt"`).

    Fields (standard Hugging Face names; nanoGPT aliases `n_layer`, `n_head`, `n_kv_head`, `n_embd`,
    `block_size`/`sequence_len` map onto them):

    - `vocab_size`: number of token ids: the tokenizer's size; the logits have this many columns.
    - `pad_vocab_size_to`: the token embedding, value embeddings and LM head get `padded_vocab_size` rows
      (`vocab_size` rounded up to this multiple; nanochat 64, for faster matmuls); the logits are cropped
      back to `vocab_size` before the softcap, so the padding rows are never predicted. 1 = no padding.
    - `hidden_size`: model width (nanochat `n_embd`).
    - `num_hidden_layers`: number of transformer blocks (nanochat `depth` / `n_layer`).
    - `num_attention_heads`: query heads.
    - `num_key_value_heads`: key/value heads for grouped-query attention; must divide
      `num_attention_heads`. Defaults to `num_attention_heads` (plain multi-head attention).
    - `head_dim`: per-head width; defaults to `hidden_size // num_attention_heads`.
    - `intermediate_size`: MLP hidden width; defaults to `4 * hidden_size`.
    - `max_position_embeddings`: context length the model is trained for (size of the learned position
      table; RoPE can run past it but quality is not promised).
    - `position_embedding`: `"rope"` (rotary, nanochat) or `"learned"` (absolute table, GPT-2).
    - `rope_theta`: rotary base frequency (nanochat master 100000, January 2026 10000).
    - `norm_type`: `"rmsnorm"` (parameter-free, nanochat) or `"layernorm"` (affine, GPT-2).
    - `norm_eps`: epsilon of the normalisation layers.
    - `embedding_norm`: normalise token embeddings before the first block (nanochat yes, GPT-2 no).
    - `qk_norm`: normalise queries and keys per head after the rotary embedding (nanochat).
    - `qk_scale`: multiply the normalised queries and keys each by this (nanochat master 1.2, so the
      attention logits are 1.44x sharper than plain QK-norm); 1.0 = off.
    - `hidden_act`: MLP nonlinearity: `"relu2"` (ReLU squared, nanochat), `"gelu"` (exact),
      `"gelu_tanh"` (GPT-2's tanh approximation) or `"swiglu"` (gated, Llama-style).
    - `bias`: biases in every Linear and LayerNorm (GPT-2 yes, nanochat no).
    - `tie_word_embeddings`: share the token embedding with the LM head (GPT-2 yes, nanochat no).
    - `final_logit_softcapping`: `c * tanh(logits / c)` on the output logits; `None` disables it.
    - `residual_scalars`: learnable per-layer scalars `x = resid_lambda[i] * x + x0_lambda[i] * x0`
      that mix the normalised input embedding `x0` (after smear) back in before each block (nanochat).
    - `smear`: after the embedding norm, `x[t] += smear_lambda * sigmoid(W @ x[t, :24]) * x[t-1]` (nanochat
      master; a cheap bigram feature). Decoding keeps the previous token's normed embedding in the cache.
    - `value_embeddings`: ResFormer value embeddings (arXiv:2410.17897) on layers `i % 2 == (L - 1) % 2`:
      an embedding table per such layer whose row of each token is added to the values,
      `v += 3 * sigmoid(W_gate @ x[:12]) * ve(input_ids)` per key/value head (nanochat master).
    - `backout`: keep the residual stream after block `L // 2` and subtract `backout_lambda` times it
      after the last block, before the final norm (nanochat master).
    - `dropout`: dropout on embeddings, attention probabilities and residual branches (nanoGPT).
    - `window_pattern`: layer pattern tiled over the depth, `"L"` = full attention, `"S"` = sliding window,
      `"M"` = a Mamba-2 layer, e.g. `"SSSL"` or `"MMML"` (attention every 4th layer); the last layer is always
      full attention. `None` = every layer full.
    - `sliding_window`: window of the `"S"` layers in tokens, counting the current token (HF
      convention). Default: nanochat master's rule, `ceil(T / 4 / 128) * 128` tokens to the left plus the
      current one (T = `max_position_embeddings`; 769 at 2048, 129 at 512).
    - `layer_types`: derived from `window_pattern` (or given): one of `"full_attention"` /
      `"sliding_attention"` / `"linear_attention"` (Mamba-2) per layer (read by transformers' caches and masks);
      at least one attention layer.
    - Mamba-2 layers (`mamba_nanogpt.py`): `mamba_expand` (inner width = expand x hidden_size),
      `mamba_head_dim` (P; inner width / P heads), `mamba_state_size` (N per head), `mamba_conv_kernel`
      (causal depthwise conv length), `mamba_chunk_size` (SSD chunk length of the training scan).
    - Mixture of Experts (`moe_nanogpt.py`): `num_experts` routed experts (0 = dense model),
      `num_experts_per_tok` (top-k), `num_shared_experts` (always used, weight 1), `moe_intermediate_size`
      (expert width; default `intermediate_size // (k + shared)`, iso-FLOP with the dense MLP),
      `mlp_layer_types` (`"dense"` / `"moe"` per layer; default every layer `"moe"` when `num_experts > 0`),
      `router_activation` (`"softmax"` Mixtral-style or `"sigmoid"` DeepSeek-V3-style), `moe_balancing`
      (`"aux_loss"`: the Switch loss times `router_aux_loss_coef` is added to `loss`; `"bias"`: DeepSeek-V3's
      per-expert selection bias moved by `router_bias_update_rate` after each optimizer step; the aux loss
      still applies if its coefficient is > 0), `router_z_loss_coef` (ST-MoE z-loss, 0 = off),
      `output_router_logits` (return the router logits; training adds the router losses either way).
    - `init_scheme`: `"nanochat"` (master), `"nanochat_jan2026"` (see the table in
      `NanoGPTPreTrainedModel._init_weights`) or `"gpt2"` (normal(0, 0.02), residual projections scaled by
      1/sqrt(2 * n_layer)).
    - `initializer_range`: std of the `"gpt2"` scheme.
    - `bos_token_id`, `eos_token_id`, `pad_token_id`: special ids (set from the tokenizer).
    - `use_cache`: return a KV cache from `forward` by default (used by `generate`).
    """

    model_type = "nanogpt"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]  # the name before and after 5.24
    attribute_map = _ATTRIBUTE_MAP
    # Tensor-parallel plan for transformers' `tp_plan="auto"` (projection names follow Llama). Each config
    # narrows it to the modules it builds (`__post_init__`): no `gate_proj` entry without a gated MLP.
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 32768
    pad_vocab_size_to: int = 1
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 2048
    position_embedding: str = "rope"
    rope_theta: float = 10000.0
    norm_type: str = "rmsnorm"
    norm_eps: float = 1e-6
    embedding_norm: bool = True
    qk_norm: bool = True
    qk_scale: float = 1.0
    hidden_act: str = "relu2"
    bias: bool = False
    tie_word_embeddings: bool = False
    final_logit_softcapping: float | None = 15.0
    residual_scalars: bool = True
    smear: bool = False
    value_embeddings: bool = False
    backout: bool = False
    dropout: float = 0.0
    window_pattern: str | None = None
    sliding_window: int | None = None
    layer_types: list[str] | None = None
    mamba_expand: int = 2
    mamba_head_dim: int = 64
    mamba_state_size: int = 64
    mamba_conv_kernel: int = 4
    mamba_chunk_size: int = 64
    num_experts: int = 0
    num_experts_per_tok: int = 2
    num_shared_experts: int = 0
    moe_intermediate_size: int | None = None
    mlp_layer_types: list[str] | None = None
    router_activation: str = "softmax"
    moe_balancing: str = "aux_loss"
    router_aux_loss_coef: float = 0.01
    router_z_loss_coef: float = 0.0
    router_bias_update_rate: float = 1e-3
    output_router_logits: bool = False
    init_scheme: str = "nanochat_jan2026"
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Derived values are computed here once; a reloaded config re-derives the same ones.
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads and self.hidden_size % self.num_attention_heads == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.window_pattern is not None:
            if self.sliding_window is None:
                self.sliding_window = nanochat_sliding_window(self.max_position_embeddings)
            self.layer_types = _layer_types_from_pattern(self.window_pattern, self.num_hidden_layers)
        elif self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        if self.mlp_layer_types is None:
            self.mlp_layer_types = [("moe" if self.num_experts else "dense")] * self.num_hidden_layers
        if self.moe_intermediate_size is None and self.num_experts:
            self.moe_intermediate_size = self.intermediate_size // (self.num_experts_per_tok + self.num_shared_experts)
        if "moe" not in self.mlp_layer_types:
            # A dense model has no router loss: trainers that read the coefficient (TRL's SFTTrainer enables an
            # auxiliary loss when it is non-zero and `output_router_logits` exists) must see 0.
            self.router_aux_loss_coef = 0.0
        # Not serialised (transformers drops it from config.json); re-derived on every load.
        dense = "dense" in self.mlp_layer_types  # MoE experts are 3-D parameters: no per-module TP entry
        self.base_model_tp_plan = {k: v for k, v in type(self).base_model_tp_plan.items()
                                   if (self.hidden_act == "swiglu" or not k.endswith("gate_proj"))
                                   and (dense or ".mlp." not in k)}
        if getattr(self, "auto_map", None) is None:
            # Saved folders must name every Auto class (save_pretrained only adds the one being saved),
            # so AutoModel and AutoModelForCausalLM both resolve from the remote code.
            self.auto_map = dict(_AUTO_MAP)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid field (called after every construction)."""

        def need(cond: bool, field: str, expected: str) -> None:
            if not cond:
                raise ValueError(f"NanoGPTConfig.{field}={getattr(self, field)!r} is invalid: expected {expected}")

        for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                      "num_key_value_heads", "intermediate_size", "max_position_embeddings"):
            value = getattr(self, field)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, field, "a positive integer")
        need(self.head_dim is not None and self.head_dim > 0, "head_dim",
             f"a positive integer (hidden_size={self.hidden_size} is not divisible by "
             f"num_attention_heads={self.num_attention_heads}; set head_dim explicitly)")
        need(self.num_attention_heads % self.num_key_value_heads == 0, "num_key_value_heads",
             f"a divisor of num_attention_heads={self.num_attention_heads}")
        need(self.position_embedding in _POSITION_EMBEDDINGS, "position_embedding", f"one of {_POSITION_EMBEDDINGS}")
        if self.position_embedding == "rope":
            need(self.head_dim % 2 == 0, "head_dim", "an even number (rotary embeddings rotate pairs)")
        need(self.rope_theta > 0, "rope_theta", "a positive number")
        need(isinstance(self.pad_vocab_size_to, int) and self.pad_vocab_size_to > 0, "pad_vocab_size_to",
             "a positive integer (1 = no padding)")
        need(self.qk_scale > 0, "qk_scale", "a positive number (1.0 = off)")
        if self.smear:
            need(self.hidden_size >= SMEAR_GATE_CHANNELS, "hidden_size",
                 f"at least {SMEAR_GATE_CHANNELS} when smear=True (the smear gate reads that many channels)")
        if self.value_embeddings:
            need(self.hidden_size >= VE_GATE_CHANNELS, "hidden_size",
                 f"at least {VE_GATE_CHANNELS} when value_embeddings=True (the gates read that many channels)")
        need(self.norm_type in _NORM_TYPES, "norm_type", f"one of {_NORM_TYPES}")
        need(self.norm_eps > 0, "norm_eps", "a positive number")
        need(self.hidden_act in _ACTIVATIONS, "hidden_act", f"one of {_ACTIVATIONS}")
        need(self.init_scheme in _INIT_SCHEMES, "init_scheme", f"one of {_INIT_SCHEMES}")
        need(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        need(self.final_logit_softcapping is None or self.final_logit_softcapping > 0,
             "final_logit_softcapping", "a positive number or None")
        need(self.initializer_range > 0, "initializer_range", "a positive number")
        need(isinstance(self.layer_types, list) and len(self.layer_types) == self.num_hidden_layers
             and all(t in _LAYER_TYPES for t in self.layer_types),
             "layer_types", f"{self.num_hidden_layers} entries of {' / '.join(map(repr, _LAYER_TYPES))}")
        need(any(t != "linear_attention" for t in self.layer_types), "layer_types",
             "at least one attention layer (the cache's sequence length and the masks come from attention layers)")
        if "linear_attention" in self.layer_types:
            self._validate_mamba(need)
        need(isinstance(self.mlp_layer_types, list) and len(self.mlp_layer_types) == self.num_hidden_layers
             and all(t in _MLP_TYPES for t in self.mlp_layer_types),
             "mlp_layer_types", f"{self.num_hidden_layers} entries of 'dense' / 'moe'")
        if "moe" in self.mlp_layer_types:
            self._validate_moe(need)
        if "sliding_attention" in self.layer_types:
            need(isinstance(self.sliding_window, int) and self.sliding_window > 0, "sliding_window",
                 "a positive integer (tokens in the window, the current one included)")

    def _validate_mamba(self, need) -> None:
        for field in ("mamba_expand", "mamba_head_dim", "mamba_state_size", "mamba_chunk_size"):
            value = getattr(self, field)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, field, "a positive integer")
        need(isinstance(self.mamba_conv_kernel, int) and self.mamba_conv_kernel >= 2, "mamba_conv_kernel",
             "an integer >= 2 (the causal conv mixes each token with at least the previous one)")
        need(self.mamba_expand * self.hidden_size % self.mamba_head_dim == 0, "mamba_head_dim",
             f"a divisor of mamba_expand x hidden_size = {self.mamba_expand * self.hidden_size} (the Mamba heads)")

    def _validate_moe(self, need) -> None:
        need(isinstance(self.num_experts, int) and self.num_experts >= 1, "num_experts",
             "a positive integer when mlp_layer_types has 'moe' layers")
        need(isinstance(self.num_experts_per_tok, int) and 1 <= self.num_experts_per_tok <= self.num_experts,
             "num_experts_per_tok", f"an integer from 1 to num_experts={self.num_experts} (top-k cannot exceed the "
             "number of experts)")
        need(isinstance(self.num_shared_experts, int) and self.num_shared_experts >= 0, "num_shared_experts",
             "a non-negative integer")
        need(isinstance(self.moe_intermediate_size, int) and self.moe_intermediate_size > 0, "moe_intermediate_size",
             "a positive integer")
        need(self.router_activation in _ROUTER_ACTIVATIONS, "router_activation", f"one of {_ROUTER_ACTIVATIONS}")
        need(self.moe_balancing in _MOE_BALANCING, "moe_balancing", f"one of {_MOE_BALANCING}")
        for field in ("router_aux_loss_coef", "router_z_loss_coef", "router_bias_update_rate"):
            need(getattr(self, field) >= 0, field, "a non-negative number")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "NanoGPTConfig":
        """A config of one of the families in `PRESETS` ("nanochat", "nanochat_jan2026", "gpt2"),
        with `overrides` on top."""
        if preset not in PRESETS:
            raise ValueError(f"NanoGPTConfig: preset={preset!r} is unknown: expected one of {sorted(PRESETS)}")
        fields = {**PRESETS[preset], **overrides}
        if preset == "nanochat_jan2026" and fields.get("window_pattern") and fields.get("sliding_window") is None:
            # nanochat 184d4c1 gave its "S" layers half the context to the left, plus the current token
            fields["sliding_window"] = fields.get("max_position_embeddings", 2048) // 2 + 1
        return cls(**fields)

    @classmethod
    def nanochat(cls, **overrides) -> "NanoGPTConfig":
        """nanochat master's GPT (92d63d4, 2026-07): every feature of the module docstring on, at d12 size
        unless overridden (prefer `from_depth`)."""
        return cls.from_preset("nanochat", **overrides)

    @classmethod
    def nanochat_jan2026(cls, **overrides) -> "NanoGPTConfig":
        """nanochat's January-2026 GPT (184d4c1): no smear, value embeddings, backout or QK scale, rotary
        base 10000, its init table; an "S" window (if a `window_pattern` is given) of T // 2 + 1 tokens."""
        return cls.from_preset("nanochat_jan2026", **overrides)

    @classmethod
    def gpt2(cls, **overrides) -> "NanoGPTConfig":
        """The nanoGPT / GPT-2 family: learned positions, LayerNorm with bias, GELU (tanh), tied
        embeddings, no QK-norm, no softcap, GPT-2 init. Defaults are GPT-2 small (124M)."""
        return cls.from_preset("gpt2", **overrides)

    @classmethod
    def from_depth(cls, depth: int, aspect_ratio: int = 64, head_dim: int = 128, preset: str = "nanochat",
                   **overrides) -> "NanoGPTConfig":
        """nanochat's sizing rule: one knob, `depth`, sizes the whole model.

        1. width = depth * aspect_ratio (64), rounded up to a whole number of `head_dim` (128) heads;
        2. heads = width / head_dim;
        3. everything else comes from `preset` (default: nanochat master) unless overridden (`vocab_size`,
           `max_position_embeddings`, `num_key_value_heads`, `window_pattern`, ...).

        `from_depth(20)` is nanochat's d20 speedrun model (width 1280, 10 heads); `from_depth(26)`
        is width 1664 with 13 heads.
        """
        if not isinstance(depth, int) or depth <= 0:
            raise ValueError(f"NanoGPTConfig.from_depth: depth={depth!r} is invalid: expected a positive integer")
        width = depth * aspect_ratio
        width = ((width + head_dim - 1) // head_dim) * head_dim
        fields = dict(num_hidden_layers=depth, hidden_size=width, num_attention_heads=width // head_dim,
                      head_dim=head_dim)
        fields.update(overrides)
        return cls.from_preset(preset, **fields)

    # ------------------------------------------------------------------ derived
    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding, value embeddings and LM head: `vocab_size` rounded up to a
        multiple of `pad_vocab_size_to`."""
        m = self.pad_vocab_size_to
        return -(-self.vocab_size // m) * m

    @property
    def window_sizes(self) -> list[int | None]:
        """Attention window per layer in tokens (current token included); `None` = full causal (or Mamba)."""
        return [self.sliding_window if t == "sliding_attention" else None for t in self.layer_types]

    @property
    def value_embedding_layers(self) -> list[int]:
        """Layers with a value embedding: alternating, the last layer always included (nanochat)."""
        if not self.value_embeddings:
            return []
        last = self.num_hidden_layers - 1  # Mamba layers have no values to add to
        return [i for i in range(self.num_hidden_layers) if i % 2 == last % 2 and self.layer_types[i] != "linear_attention"]

    @property
    def backout_layer(self) -> int | None:
        """The block whose output `backout` subtracts at the end (`L // 2`), or None."""
        return self.num_hidden_layers // 2 if self.backout else None


def nanochat_sliding_window(max_seq_len: int) -> int:
    """nanochat master's short window in HF terms: ceil(T / 4 / 128) * 128 tokens to the left (a whole
    number of FlashAttention-3 tiles) plus the current token (HF's `sliding_window` counts it)."""
    return -(-max_seq_len // 4 // 128) * 128 + 1


# torch's default RMSNorm eps for float32 (`torch.finfo(torch.float32).eps`), which nanochat's
# `F.rms_norm(x, (d,))` uses; our norms compute in float32, so it is the eps that applies.
TORCH_FLOAT32_EPS = 2.0**-23

# The families, as field values on top of the class defaults (the January-2026 layout, unpadded).
PRESETS: dict[str, dict] = {
    "nanochat": dict(pad_vocab_size_to=64, rope_theta=100000.0, qk_scale=1.2, smear=True, value_embeddings=True,
                     backout=True, window_pattern="SSSL", norm_eps=TORCH_FLOAT32_EPS, init_scheme="nanochat"),
    "nanochat_jan2026": dict(pad_vocab_size_to=64, norm_eps=TORCH_FLOAT32_EPS, init_scheme="nanochat_jan2026"),
    "gpt2": dict(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=1024, position_embedding="learned", norm_type="layernorm",
                 norm_eps=1e-5, embedding_norm=False, qk_norm=False, hidden_act="gelu_tanh", bias=True,
                 tie_word_embeddings=True, final_logit_softcapping=None, residual_scalars=False,
                 init_scheme="gpt2"),
}


def _layer_types_from_pattern(pattern: str, num_layers: int) -> list[str]:
    """Tile `pattern` (e.g. "SSSL", "MMML") over the layers; the last layer is always full attention."""
    if not isinstance(pattern, str) or not pattern or set(pattern.upper()) - set(_PATTERN_LETTERS):
        raise ValueError(
            f"NanoGPTConfig.window_pattern={pattern!r} is invalid: expected a non-empty string of 'S' "
            "(sliding window), 'L' (full attention) and 'M' (Mamba-2), e.g. 'SSSL' or 'MMML'"
        )
    pattern = pattern.upper()
    types = [_PATTERN_LETTERS[pattern[i % len(pattern)]] for i in range(num_layers)]
    types[-1] = "full_attention"
    return types


__all__ = ["NanoGPTConfig", "PRESETS", "nanochat_sliding_window"]
