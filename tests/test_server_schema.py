"""Request parsing and reply rendering of the chat server (hf_nanogpt.server_schema), without a server:
strict types, JSON edge cases, the byte-count bound on prompt length, and readable reply text."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from hf_nanogpt.engine import ChatTokens
from hf_nanogpt.server_guard import ApiError
from hf_nanogpt.server_schema import (ChatCompletionRequest, GenerateRequest, ReplyText, min_prompt_tokens,
                                      parse_json, readable_text, reply_segments, to_conversation, validate)
from hf_nanogpt.tokenization import render_for_completion, token_bytes

USER = [{"role": "user", "content": "hi"}]


def refused(model, data) -> ApiError:
    with pytest.raises(ApiError) as info:
        validate(model, data)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("field, value, where", [
    ("max_tokens", "5", "max_tokens"), ("max_tokens", True, "max_tokens"), ("max_tokens", 5.0, "max_tokens"),
    ("stream", "yes", "stream"), ("stream", 1, "stream"), ("temperature", "0.5", "temperature"),
    ("n", None, "n"), ("seed", 2**63, "seed"), ("seed", -(2**63) - 1, "seed"), ("top_k", 0, "top_k"),
    ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
    ("messages", [{"role": "user", "content": [{"type": ["text"], "text": "x"}]}], "messages.0.content"),
    ("messages", [{"role": "user", "content": [{"type": {"a": 1}}]}], "messages.0.content"),
    ("messages", [{"role": 5, "content": "x"}], "messages.0.role"),
    ("messages", [{"role": "user", "content": "a\ud800b"}], "messages.0.content"),
])
def test_strict_types_name_the_field(field, value, where):
    err = refused(ChatCompletionRequest, {"messages": USER, field: value})
    assert err.message.startswith(where) and err.param.startswith(where)


def test_valid_requests_and_the_64_bit_seed_range():
    for seed in (0, 2**63 - 1, -(2**63)):
        assert validate(ChatCompletionRequest, {"messages": USER, "seed": seed}).seed == seed
    req = validate(ChatCompletionRequest, {"messages": USER, "temperature": 1, "unknown_openai_field": {"x": 1}})
    assert req.temperature == 1.0  # a JSON integer is a number; unknown fields are ignored (OpenAI clients)


def test_generate_request_refuses_unknown_fields_by_name():
    assert validate(GenerateRequest, {"prompt": "Once", "max_tokens": 3}).prompt == "Once"
    assert "max_token" in refused(GenerateRequest, {"prompt": "Once", "max_token": 3}).message
    assert refused(GenerateRequest, {"prompt": ""}).param == "prompt"
    assert refused(GenerateRequest, {"prompt": ["Once"]}).param == "prompt"


@pytest.mark.parametrize("raw, message", [
    (b'{"messages": NaN}', "NaN is not a JSON number"),
    (b'{"n": Infinity}', "Infinity is not a JSON number"),
    (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_json_edge_cases_are_400(raw, message):
    with pytest.raises(ApiError, match=message) as info:
        parse_json(raw)
    assert info.value.status == 400


def test_utf16_and_utf32_bodies_parse():
    for encoding in ("utf-8", "utf-16", "utf-32"):
        assert parse_json(json.dumps({"messages": USER}).encode(encoding)) == {"messages": USER}


def test_conversation_checks_and_the_raw_content_round_trip():
    req = validate(ChatCompletionRequest, {"messages": [
        {"role": "user", "content": "3*4?"},
        {"role": "assistant", "content": "calc: 3*4 = 12", "raw_content":
            "<|python_start|>3*4<|python_end|><|output_start|>12<|output_end|>12"},
        {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "text", "text": "5*5?"}]}]})
    messages = to_conversation(req)
    assert messages[1]["content"] == [{"type": "python", "text": "3*4"}, {"type": "output", "text": "12"},
                                      {"type": "text", "text": "12"}]
    assert messages[2]["content"] == "and 5*5?"
    for bad, text in ((["a", "b"], "only text parts"), (["text", None], "every part needs a text")):
        parts = [{"type": t, "text": "x"} if t else {"type": "text"} for t in bad]
        req = validate(ChatCompletionRequest, {"messages": [{"role": "user", "content": parts}]})
        with pytest.raises(ApiError, match=text):
            to_conversation(req)


# ----------------------------------------------------------------------------- the prompt bound

segments = st.lists(st.tuples(st.sampled_from(["text", "python", "output"]),
                              st.text(st.characters(codec="utf-8"), max_size=40)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(st.text(st.characters(codec="utf-8"), max_size=60), segments), min_size=1,
                      max_size=3), system=st.none() | st.text(max_size=30))
def test_min_prompt_tokens_is_a_lower_bound(tiny_tokenizer, turns, system):
    messages = [{"role": "system", "content": system}] if system is not None else []
    for user, parts in turns:
        content = [{"type": "text", "text": t} if k == "text" else {"type": k, "text": t} for k, t in parts]
        if content[0]["type"] == "output":  # an output answers a call
            content.insert(0, {"type": "python", "text": "1"})
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": content}]
    messages.append({"role": "user", "content": turns[0][0]})
    try:
        prompt = render_for_completion(tiny_tokenizer, messages)
    except ValueError:  # e.g. an output not right after a call: refused by the renderer, not our concern
        return
    bound = min_prompt_tokens(messages, int(token_bytes(tiny_tokenizer).max()))
    assert bound <= len(prompt)


# ----------------------------------------------------------------------------- readable replies


@pytest.mark.parametrize("raw, readable", [
    ("<|python_start|>12 * 34<|python_end|><|output_start|>408<|output_end|>#### 408", "calc: 12 * 34 = 408\n#### 408"),
    ("Sure:<|python_start|>1+1<|python_end|><|output_start|>2<|output_end|> so 2", "Sure:\ncalc: 1+1 = 2 so 2"),
    ("<|python_start|>1234", "calc: 1234"),  # a call the model never closed reads as far as it goes
    ("<|python_start|>1/0<|python_end|>#### ?", "calc: 1/0\n#### ?"),  # the calculator refused: no output
    ("plain <|user_start|>text", "plain text"),
    ("no tools", "no tools"),
])
def test_readable_text(raw, readable):
    assert readable_text(raw) == readable


def test_segments_field():
    assert reply_segments("a") == [{"type": "text", "text": "a"}]
    assert reply_segments("<|python_start|>2*3<|python_end|><|output_start|>6<|output_end|>") == [
        {"type": "python", "text": "2*3"}, {"type": "output", "text": "6"}]


pieces = st.lists(st.one_of(st.sampled_from(["<|python_start|>", "<|python_end|>", "<|output_start|>",
                                             "<|output_end|>", " ", "\n", "#### "]),
                            st.text("abc 12*+=\né→✓", min_size=1, max_size=8)), max_size=12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=pieces)
def test_streamed_readable_text_equals_the_whole(tiny_tokenizer, pieces):
    raw = "".join(pieces)
    ids = tiny_tokenizer.encode(raw, add_special_tokens=False)  # control-token strings -> their ids
    reply = ReplyText(lambda t: tiny_tokenizer.decode(t, skip_special_tokens=False),
                      lambda t: tiny_tokenizer.decode(t, skip_special_tokens=True), ChatTokens.from_tokenizer(tiny_tokenizer))
    out = [reply.push(i) for i in ids] + [reply.flush()]
    assert "".join(r for _, r in out) == raw
    assert "".join(t for t, _ in out) == readable_text(raw)


def test_min_prompt_tokens_counts_adjacent_text_parts_together(tiny_tokenizer):
    """The case hypothesis found: two assistant text parts "0" and "0" render as "00", one token here, so the
    bound must not give each part a token of its own."""
    messages = [{"role": "user", "content": ""},
                {"role": "assistant", "content": [{"type": "text", "text": "0"}, {"type": "text", "text": "0"}]},
                {"role": "user", "content": ""}]
    prompt = render_for_completion(tiny_tokenizer, messages)
    assert min_prompt_tokens(messages, int(token_bytes(tiny_tokenizer).max())) <= len(prompt)
