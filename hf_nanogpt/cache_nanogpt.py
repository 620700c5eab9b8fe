"""Decoding state that is not attention keys/values, kept inside the transformers `Cache`.

Why in the cache: `generate()`, beam search and `hf_nanogpt.engine` only carry the cache object from one
forward call to the next, and they reshape it (`reorder_cache` for beams, `batch_repeat_interleave` and
`batch_select_indices` for the engine's fan-out and finished rows, `reset` for a reused static cache).
State kept anywhere else would silently go stale under those operations, and cached generation would
no longer equal uncached generation.

The mechanism is transformers' own for non-K/V state (Jamba, Bamba, Falcon-H1, Qwen3-Next keep their
conv / SSM states in `LinearAttentionCacheLayerMixin` layers, which `Cache.is_linear` reports and which
the sequence-length and mask-size queries skip). `NanoGPTStateLayer` is such a layer with the two batch
operations the mixin lacks. Two kinds of state, the mixin's:

- conv states (B, C, K): the last K inputs of a causal sliding window, time last.
  `update_conv_state(new (B, C, T), state_idx, conv_kernel_size=K)` returns (B, C, K + T): the K inputs
  before this call (zeros where there were none yet), then the new ones. nanochat's smear is the K = 1
  case (the previous token's normed embedding); a Mamba block's short convolution is the same with K = 4.
- recurrent states (B, ...): replaced wholesale at every step (`update_recurrent_state`), e.g. an SSM state.

Where: state that belongs to one decoder layer would sit at that layer's index (a `layer_types` entry of
its own); state of the model as a whole (smear) sits in one extra slot after the decoder layers,
created on first use by `model_state_layer`, so any `Cache` works: the engine's `DynamicCache`,
`generate()`'s dynamic or static caches, or one the caller built.

`crop` (assisted decoding) follows the mixin's contract: it needs `activate_past_recording()` first,
which `generate()` calls; the layer then keeps every input until `crop` trims it.

This file travels as remote code with the modeling file (torch and transformers imports only).
"""

import torch
from transformers.cache_utils import Cache, LinearAttentionCacheLayerMixin


class NanoGPTStateLayer(LinearAttentionCacheLayerMixin):
    """A cache layer of per-row conv and recurrent states (see the module docstring); batch dim 0."""

    is_sliding = False

    def __init__(self, number_of_states: int = 1, **kwargs):
        super().__init__(number_of_states=number_of_states, **kwargs)
        self.keys = self.values = None  # `DynamicCache.__iter__` reads these on every layer

    @property
    def is_compileable(self) -> bool:
        # fixed shapes, updated in place -- unless recording the past for `crop`, when the conv states grow
        return not self.record_past

    def lazy_initialization(self, conv_states: torch.Tensor | None = None, recurrent_states: torch.Tensor | None = None,
                            state_idx: int = 0, conv_kernel_size: int = 1) -> None:
        source = conv_states if conv_states is not None else recurrent_states
        self.device, self.dtype = source.device, source.dtype
        if conv_states is not None:
            self.conv_kernel_size[state_idx] = conv_kernel_size
            self.conv_states[state_idx] = conv_states.new_zeros(*conv_states.shape[:-1], conv_kernel_size)
            self.is_conv_states_initialized[state_idx] = True
        if recurrent_states is not None:
            self.recurrent_states[state_idx] = torch.zeros_like(recurrent_states)
            self.is_recurrent_states_initialized[state_idx] = True

    def update_conv_state(self, conv_states: torch.Tensor, state_idx: int = 0, conv_kernel_size: int = 1,
                          **kwargs) -> torch.Tensor:
        """Append `conv_states` (B, C, T); return (B, C, K + T): the K earlier inputs, then these."""
        if not self.is_conv_states_initialized[state_idx]:
            self.lazy_initialization(conv_states=conv_states, state_idx=state_idx, conv_kernel_size=conv_kernel_size)
        k, t = self.conv_kernel_size[state_idx], conv_states.shape[-1]
        stored = self.conv_states[state_idx]
        if self.has_previous_state[state_idx]:
            past = stored
        else:  # first call, or after `reset`: nothing came before (the batch may differ from last time)
            past = conv_states.new_zeros(*conv_states.shape[:-1], k)
        full = torch.cat([past.to(conv_states.dtype), conv_states], dim=-1)  # (B, C, past + T)
        self.has_previous_state[state_idx] = True
        if self.record_past:  # keep everything until `crop` decides what to drop
            self.conv_states[state_idx] = full
        elif stored.shape == full[..., -k:].shape:  # in place: a static address for CUDA graphs
            stored.copy_(full[..., -k:])
        else:
            self.conv_states[state_idx] = full[..., -k:].clone()
        return full[..., -(k + t):]

    def update_recurrent_state(self, recurrent_states: torch.Tensor, state_idx: int = 0, **kwargs) -> torch.Tensor:
        """Replace recurrent state `state_idx` by `recurrent_states` (B, ...); return the stored tensor."""
        if not self.is_recurrent_states_initialized[state_idx]:
            self.lazy_initialization(recurrent_states=recurrent_states, state_idx=state_idx)
        stored = self.recurrent_states[state_idx]
        if stored.shape == recurrent_states.shape:
            stored.copy_(recurrent_states)
        else:
            self.recurrent_states[state_idx] = stored = recurrent_states.clone()
        self.has_previous_state[state_idx] = True
        return stored

    def _map_rows(self, fn) -> None:
        for i in range(self.number_of_states):
            if self.is_conv_states_initialized[i]:
                self.conv_states[i] = fn(self.conv_states[i])
            if self.is_recurrent_states_initialized[i]:
                self.recurrent_states[i] = fn(self.recurrent_states[i])

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row `repeats` times (the engine's fan-out of one prefill to many samples)."""
        self._map_rows(lambda s: s.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows `indices` (the engine drops finished samples)."""
        self._map_rows(lambda s: s[indices.to(s.device)])


def model_state_layer(cache: Cache, num_layers: int) -> NanoGPTStateLayer:
    """The model-level state slot of `cache`: the layer after the `num_layers` decoder layers, created on
    first use. A cache that grows its layers lazily (`DynamicCache()` without a config) gets its decoder
    layers created first, so the slot never takes a decoder layer's index."""
    layers = cache.layers
    if len(layers) < num_layers:
        replicate = getattr(cache, "layer_class_to_replicate", None)
        if replicate is None:
            raise ValueError(f"the cache has {len(layers)} layers, fewer than the model's {num_layers}: "
                             "build it for this model, e.g. DynamicCache(config=model.config)")
        while len(layers) < num_layers:
            layers.append(replicate())
    if len(layers) == num_layers:
        layers.append(NanoGPTStateLayer())
    layer = layers[num_layers]
    if not isinstance(layer, NanoGPTStateLayer):
        raise ValueError(f"cache layer {num_layers} is a {type(layer).__name__}, expected the model-state slot "
                         "(NanoGPTStateLayer): this cache was built for a deeper model")
    return layer


__all__ = ["NanoGPTStateLayer", "model_state_layer"]
