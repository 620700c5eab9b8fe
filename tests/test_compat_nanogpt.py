"""One model for transformers 5.17 to 5.24: both cache spellings, positions from the mask, no deprecation noise."""

import logging
import warnings

import pytest
import torch
from transformers.cache_utils import DynamicCache

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.compat_nanogpt import (
    CACHE_NAME,
    check_transformers_version,
    model_cache_keyword,
    pick_cache,
    positions_from_mask,
)

V = 61


def build(**overrides) -> NanoGPTForCausalLM:
    torch.manual_seed(0)
    config = NanoGPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1, **overrides)
    model = NanoGPTForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0, 0.05)
    return model


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("keyword", ["cache", "past_key_values"])
def test_both_cache_spellings_continue_the_same_history(keyword):
    model = build()
    ids = torch.randint(2, V, (1, 9))
    full = model(ids).logits[:, -1]
    cache = DynamicCache(config=model.config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(ids[:, :-1], use_cache=True, **{keyword: cache})
    assert cache.get_seq_length() == 8  # the cache really was filled, not dropped into **kwargs
    # the old spelling is deprecated (as in transformers' own models) only where a new one exists
    deprecated = [w for w in caught if "`past_key_values` is deprecated" in str(w.message)]
    assert len(deprecated) == (keyword == "past_key_values" and CACHE_NAME == "cache")
    step = model(ids[:, -1:], use_cache=True, **{keyword: cache}).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-5)


def test_the_returned_cache_has_this_releases_field_name():
    model = build()
    out = model(torch.randint(2, V, (1, 5)), use_cache=True)
    assert isinstance(getattr(out, CACHE_NAME), DynamicCache)
    assert CACHE_NAME in out.keys()


def test_two_different_caches_are_refused():
    with pytest.raises(ValueError, match="not two different objects"):
        pick_cache(DynamicCache(), DynamicCache())
    cache = DynamicCache()
    assert pick_cache(cache, cache) is cache and pick_cache(None, cache) is cache


def test_generation_prints_no_deprecation_warning():
    from transformers.utils import logging as hf_logging

    model = build()
    handler = _Records()
    root = hf_logging.get_logger("transformers")
    root.addHandler(handler)
    hf_logging.get_logger("transformers").warning_once.cache_clear()  # `warning_once` remembers earlier tests
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            for cache in ("dynamic", "static"):
                model.generate(torch.randint(2, V, (2, 5)), max_new_tokens=4, do_sample=False, pad_token_id=1,
                               eos_token_id=None, cache_implementation=cache)
            model(torch.randint(2, V, (1, 5)), use_cache=True)
    finally:
        root.removeHandler(handler)
    assert not [m for m in handler.messages if "deprecat" in m.lower()], handler.messages


@pytest.mark.parametrize("position_embedding", ["learned", "rope"])
def test_positions_come_from_the_padding_mask_when_not_given(position_embedding):
    model = build(position_embedding=position_embedding)
    row = torch.randint(2, V, (1, 6))
    padded = torch.cat([torch.full((1, 3), 1), row], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
    alone = model(row).logits
    together = model(padded, attention_mask=mask).logits[:, 3:]  # no position_ids: derived from the mask
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_positions_from_mask_and_from_the_cache_length():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions_from_mask(mask, 2, 3, torch.device("cpu")).tolist() == [[1, 2], [3, 4]]
    assert positions_from_mask(None, 3, 4, torch.device("cpu")).tolist() == [[4, 5, 6]]


def test_engine_picks_the_keyword_a_forward_names():
    def old(input_ids, past_key_values=None, use_cache=None): ...

    def new(input_ids, cache=None, use_cache=None): ...

    assert model_cache_keyword(old) == "past_key_values"
    assert model_cache_keyword(new) == "cache"
    assert model_cache_keyword(build().forward) == CACHE_NAME  # ours names both: use this release's


@pytest.mark.parametrize("version,warns", [("5.17.0", False), ("5.24.0", False), ("5.24.3", False),
                                           ("5.25.0", True), ("6.0.0", True), ("5.16.1", True),
                                           ("5.25.0.dev0", True)])
def test_an_untested_transformers_release_warns_at_load(version, warns):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = check_transformers_version(version)
    assert (message is not None) == warns
    if warns:
        assert version in message and "5.17" in message and "5.24" in message
        assert any(version in str(w.message) for w in caught)
