"""The few places where transformers releases 5.17 to 5.24 differ, handled once.

This file travels as remote code next to saved checkpoints (the modeling file imports it with a
single-dot relative import), so it runs on the *user's* transformers and imports only the standard
library, torch and transformers.

- 5.24 renamed `past_key_values` to `cache`: in `generate()`'s model call, in
  `create_causal_mask(..., cache=...)` and in the output classes (`BaseModelOutputWithPast.cache`).
  The old keyword still works where transformers wraps it in `deprecate_kwarg` (with a deprecation
  warning), but a `forward` that names only one spelling silently receives the other in `**kwargs`.
  `CACHE_NAME` is this release's spelling, read from the signature of `create_causal_mask` (not from
  the version string, so patch releases and backports are handled too). The model accepts both
  spellings and passes on this one, so `generate()` and the engine print no deprecation warning on
  either release; a caller who passes `past_key_values` by hand on 5.24+ gets the same FutureWarning
  transformers' own models give (its common tests check for it).
- Positions: when `position_ids` are not given, they are derived from the 2-D attention mask
  (left padding), as older `generate()` releases did for every model.
"""

import inspect
import re
import warnings

import torch
import transformers
from transformers.masking_utils import create_causal_mask

# The transformers releases this model is tested against (CI: newest with the full suite, oldest
# with the model tests). Outside it the model still loads, with a warning (see `check_transformers_version`).
OLDEST_TESTED = (5, 17)
NEWEST_TESTED = (5, 24)

CACHE_NAME = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def pick_cache(cache, past_key_values):
    """The cache object of a forward call that may name it either way (`cache` / `past_key_values`)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("pass the cache once, as `cache` or as `past_key_values`, not two different objects")
    if past_key_values is not None and cache is None and CACHE_NAME == "cache":
        warnings.warn("`past_key_values` is deprecated in transformers >= 5.24 for `forward`. Use `cache` instead.",
                      FutureWarning, stacklevel=3)
    return cache if cache is not None else past_key_values


def cache_kwargs(cache) -> dict:
    """`{name: cache}` with this release's keyword, for transformers calls and output classes."""
    return {CACHE_NAME: cache}


def model_cache_keyword(forward) -> str:
    """The cache keyword a model's `forward` understands: this release's spelling when the signature
    names it (our models name both), otherwise whichever spelling the signature has."""
    params = inspect.signature(forward).parameters
    if CACHE_NAME in params:
        return CACHE_NAME
    return "cache" if "cache" in params else "past_key_values"


def positions_from_mask(attention_mask: torch.Tensor | None, seq_len: int, past_seen: int,
                        device: torch.device) -> torch.Tensor:
    """Position ids (B or 1, T) of the `seq_len` new tokens.

    With a 2-D padding mask (B, past + T) -- left padding in batched generation -- a token's position
    is the number of real tokens before it, so every row starts at 0 at its first real token (pad
    tokens get 0; their outputs are masked out anyway). Without a mask: `past_seen .. past_seen + T - 1`.
    """
    if isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
        mask = attention_mask.to(device=device, dtype=torch.long)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, past + T)
        return positions[:, -seq_len:]
    return torch.arange(past_seen, past_seen + seq_len, device=device)[None]


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_transformers_version(version: str | None = None) -> str | None:
    """Warn (once per process) when transformers is outside the tested range; returns the message.

    A newer release may rename model arguments again (as 5.24 did with the cache); the warning says
    so at load time instead of letting generation go silently wrong.
    """
    version = version or transformers.__version__
    parsed = _major_minor(version)
    if parsed is None or OLDEST_TESTED <= parsed <= NEWEST_TESTED:
        return None
    lo, hi = ".".join(map(str, OLDEST_TESTED)), ".".join(map(str, NEWEST_TESTED))
    message = (f"NanoGPT is tested with transformers {lo} to {hi}, but transformers {version} is installed; "
               f"if generation or loading misbehaves, install a tested release: pip install 'transformers>={lo},<="
               f"{hi}.99'")
    warnings.warn(message, UserWarning, stacklevel=2)
    return message


__all__ = ["CACHE_NAME", "NEWEST_TESTED", "OLDEST_TESTED", "cache_kwargs", "check_transformers_version",
           "model_cache_keyword", "pick_cache", "positions_from_mask"]
