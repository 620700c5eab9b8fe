"""The hybrid part of `bench.py generate`: a Mamba-2 / attention hybrid against the dense model of equal width.

Both models come from the same `from_depth` config (depth, width, heads, vocabulary, context); the hybrid's
layers follow `--hybrid_pattern` (default "MMML": Mamba-2 mixers, full attention every 4th layer, the last
layer always attention). Reported, side by side in one run:

- greedy decoding speed with `model.generate()` (new tokens per second, best of `--repeats`, alternating);
- cache memory: bytes per cached token (attention K/V grow with the context) and the fixed bytes per
  sequence (a Mamba layer's conv window and SSM state do not grow), measured on the real cache objects after
  prefills of two lengths.
"""

import time

import torch
from transformers import DynamicCache

from ..configuration_nanogpt import NanoGPTConfig
from ..modeling_nanogpt import NanoGPTForCausalLM


def cache_bytes(cache) -> int:
    """Bytes held by a cache: attention keys/values plus every conv / recurrent state tensor."""
    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        tensors += list(getattr(layer, "conv_states", {}).values()) + list(getattr(layer, "recurrent_states", {}).values())
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


@torch.no_grad()
def cache_footprint(model, lengths: tuple[int, int], device) -> tuple[float, float]:
    """(bytes per token, fixed bytes) of `model`'s cache for one sequence, from prefills of two lengths."""
    sizes = []
    for n in lengths:
        cache = DynamicCache(config=model.config)
        model(torch.randint(0, model.config.vocab_size, (1, n), device=device), cache=cache, use_cache=True)
        sizes.append(cache_bytes(cache))
    per_token = (sizes[1] - sizes[0]) / (lengths[1] - lengths[0])
    return per_token, sizes[0] - per_token * lengths[0]


def hybrid_report(args) -> str:
    """The markdown section `bench.py generate` prints after its main table (same `args`)."""
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else (
        torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    common = dict(head_dim=args.head_dim, vocab_size=args.vocab_size, max_position_embeddings=args.context,
                  preset=args.preset)
    dense_cfg = NanoGPTConfig.from_depth(args.depth, **common)
    hybrid_cfg = NanoGPTConfig.from_depth(args.depth, window_pattern=args.hybrid_pattern, **common)
    if "linear_attention" not in hybrid_cfg.layer_types:
        return f"Hybrid decoding: depth {args.depth} leaves no Mamba-2 layer in pattern {args.hybrid_pattern!r}; skipped."
    torch.manual_seed(args.seed)
    models = {name: NanoGPTForCausalLM(cfg).to(device=args.device, dtype=dtype).eval()
              for name, cfg in (("dense", dense_cfg), ("hybrid", hybrid_cfg))}
    prompt = torch.randint(0, args.vocab_size, (1, args.prompt_tokens), device=args.device)
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None,
              pad_token_id=0)
    best = dict.fromkeys(models, float("inf"))
    with torch.no_grad():
        for name, m in models.items():
            m.generate(prompt, **kw)  # warm-up
        for _ in range(args.repeats):  # round-robin: a load change hits both alike
            for name, m in models.items():
                start = time.perf_counter()
                m.generate(prompt, **kw)
                best[name] = min(best[name], time.perf_counter() - start)
    lengths = (args.prompt_tokens, args.prompt_tokens + args.new_tokens)
    foot = {name: cache_footprint(m, lengths, args.device) for name, m in models.items()}
    tok_s = {name: args.new_tokens / t for name, t in best.items()}
    layers = "".join({"linear_attention": "M", "full_attention": "L", "sliding_attention": "S"}[t]
                     for t in hybrid_cfg.layer_types)
    lines = [
        f"### Hybrid decoding (Mamba-2 / attention `{layers}` vs dense, width {dense_cfg.hidden_size}, "
        f"depth {args.depth}, {dtype}, prompt {args.prompt_tokens}, {args.new_tokens} new tokens)",
        "",
        "| model | params | `generate()` tokens/s | x dense | cache bytes / token | fixed cache bytes / sequence |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        per_token, fixed = foot[name]
        lines.append(f"| {name} | {m.parameter_counts()['total'] / 1e6:.2f} M | {tok_s[name]:,.1f} | "
                     f"{tok_s[name] / tok_s['dense']:.2f} | {per_token:,.0f} | {fixed:,.0f} |")
    return "\n".join(lines)


__all__ = ["cache_bytes", "cache_footprint", "hybrid_report"]
