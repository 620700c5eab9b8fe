"""Hostile input, browser-origin safety and limits of the chat server (hf_nanogpt.server_guard) on a REAL
loopback server: a property-based fuzz test (no request a client can send gets a 5xx), the Host
check (DNS rebinding), JSON-only POSTs, CORS only when configured, the body-size limit answered
before parsing, the bearer scheme in any case with a constant-time compare, and the API docs behind
the key and served without a CDN."""

import json
import os
import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from hf_nanogpt import server_guard
from hf_nanogpt.server import create_app
from hf_nanogpt.server_guard import host_middleware_hosts

from test_server import USER, live_server, post, wait_for  # noqa: E402  (tests/ is on sys.path under pytest)

BODY = {"messages": USER, "max_tokens": 2}


@pytest.fixture(scope="module")
def guarded(model, tiny_tokenizer):
    """A server with a key, a small body limit and one allowed CORS origin."""
    app = create_app(model, tiny_tokenizer, api_key="s3cret", max_body_bytes=2000,
                     cors_origins=["http://allowed.example"])
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    from test_server import tiny_chat_model

    return tiny_chat_model(tiny_tokenizer)


KEY = {"Authorization": "Bearer s3cret"}


def test_host_header_must_name_this_server(guarded):
    port = guarded.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]:8000", "LOCALHOST"):
        assert httpx.get(f"{guarded}/health", headers={"Host": host}).status_code == 200, host
    # a page on attacker.example whose name was rebound to 127.0.0.1 sends its own name as Host
    for host in (f"attacker.example:{port}", "127.0.0.1.attacker.example", "localhost.", "[::2]"):
        r = httpx.post(f"{guarded}/v1/chat/completions", json=BODY, headers={"Host": host, **KEY})
        assert r.status_code == 400 and "Invalid host header" in r.text, host


def test_allowed_hosts_for_each_kind_of_bind():
    assert host_middleware_hosts("127.0.0.1", None) == ["127.0.0.1", "localhost", "[::1]"]
    assert host_middleware_hosts("0.0.0.0", None) == ["*"]
    assert host_middleware_hosts("192.168.1.5", None) == ["192.168.1.5"]
    assert host_middleware_hosts("fe80::1", None) == ["[fe80::1]"]
    assert host_middleware_hosts("0.0.0.0", ["Chat.Example", "*.lan"]) == ["chat.example", "*.lan"]


def test_an_allow_list_replaces_the_loopback_names(model, tiny_tokenizer):
    with live_server(create_app(model, tiny_tokenizer, allowed_hosts=["chat.example"])) as url:
        assert httpx.get(f"{url}/health", headers={"Host": "chat.example"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 400  # Host: 127.0.0.1:PORT is not listed


def test_posts_must_be_json(guarded):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {**KEY, **({"Content-Type": content_type} if content_type else {})}
        for path in ("/v1/chat/completions", "/generate"):
            r = httpx.post(f"{guarded}{path}", content=b'{"messages": [], "prompt": "x"}', headers=headers)
            assert r.status_code == 415, (path, content_type)
            assert "Content-Type must be application/json" in r.json()["error"]["message"]
    r = post(guarded, BODY, headers={**KEY, "Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200


def test_cors_only_for_configured_origins(guarded, model, tiny_tokenizer):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(f"{guarded}/v1/chat/completions", headers={"Origin": "http://allowed.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://allowed.example"
    evil = httpx.options(f"{guarded}/v1/chat/completions", headers={"Origin": "http://evil.example", **preflight})
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    with live_server(create_app(model, tiny_tokenizer)) as url:  # no cors_origins: no CORS at all
        r = httpx.options(f"{url}/v1/chat/completions", headers={"Origin": "http://allowed.example", **preflight})
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
        r = post(url, BODY, headers={"Origin": "http://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_body_limit_is_413_before_parsing(guarded):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}'
    r = httpx.post(f"{guarded}/v1/chat/completions", content=big, headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the server limit of 2000 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is counted while the body arrives
        for _ in range(10):
            yield b" " * 500

    r = httpx.post(f"{guarded}/generate", content=chunks(), headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(f"{guarded}/health").json()["busy"] == 0


def test_bearer_scheme_is_case_insensitive_and_compared_in_constant_time(guarded, monkeypatch):
    for header in ("Bearer s3cret", "bearer s3cret", "BEARER  s3cret"):
        assert post(guarded, BODY, headers={"Authorization": header}).status_code == 200, header
    for header in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer", ""):
        r = post(guarded, BODY, headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", header
    r = post(guarded, BODY, headers={"Authorization": "Bearer s3cr\xe9t".encode("latin-1")})
    assert r.status_code == 401  # a non-ASCII header byte is a wrong key, not a 500
    calls = []
    real = server_guard.secrets.compare_digest
    monkeypatch.setattr(server_guard.secrets, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert httpx.get(f"{guarded}/v1/models", headers=KEY).status_code == 200
    assert calls == [(b"s3cret", b"s3cret")]


def test_docs_behind_the_key_and_offline(guarded, model, tiny_tokenizer):
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(f"{guarded}{path}").status_code == 401
    page = httpx.get(f"{guarded}/docs", headers=KEY)
    assert page.status_code == 200
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert links and all(link.startswith("/static-docs/") for link in links), links  # nothing from a CDN
    assert "http" not in page.text.replace("http-equiv", "")
    for link in links:
        assert httpx.get(f"{guarded}{link}").status_code == 200
    schema = httpx.get(f"{guarded}/openapi.json", headers=KEY).json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/ChatCompletionRequest"
    assert "messages" in schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "prompt" in schema["components"]["schemas"]["GenerateRequest"]["properties"]
    with live_server(create_app(model, tiny_tokenizer, docs=False)) as url:
        assert httpx.get(f"{url}/docs").status_code == 404 and httpx.get(f"{url}/openapi.json").status_code == 404


# ----------------------------------------------------------------------------- fuzzing: never a 5xx

FUZZ_EXAMPLES = int(os.environ.get("HF_NANOGPT_FUZZ_EXAMPLES", "120"))
FUZZ_BODY_LIMIT = 64 * 1024

json_leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
             | st.text(max_size=20) | st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, -2**63 - 1, 1e308, "5", "yes"]))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
any_text = st.text(max_size=60)  # any code point, lone surrogates included
part = st.fixed_dictionaries({"type": st.sampled_from(["text", "text", "python", "output", "image_url"]) | json_value,
                              "text": any_text | json_value})
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                 "content": any_text | st.lists(part, max_size=3)},
                                optional={"raw_content": any_text | json_value})
# valid values of each field; a mutation below may replace any of them with an arbitrary JSON value
CHAT_FIELDS = {"max_tokens": st.integers(1, 6), "max_completion_tokens": st.integers(1, 6), "n": st.integers(1, 3),
               "top_k": st.integers(1, 2000), "seed": st.integers(-2**63, 2**63 - 1),
               "temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1), "stream": st.booleans(),
               "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
               "model": st.sampled_from(["tiny", "other"]), "stop": st.just([])}
GENERATE_FIELDS = {"max_tokens": st.integers(1, 6), "temperature": st.floats(0, 2)}


@st.composite
def requests(draw):
    """(method, path, headers, body bytes): a valid request, then 0-3 random mutations of its shape, types,
    sizes, nesting, encoding or headers."""
    path = draw(st.sampled_from(["/v1/chat/completions"] * 3 + ["/generate"] * 2 + ["/v1/models", "/health"]))
    chat = path != "/generate"
    fields = CHAT_FIELDS if chat else GENERATE_FIELDS
    value = {"messages": [{"role": "user", "content": draw(any_text)}]} if chat else {"prompt": draw(any_text)}
    value.update(draw(st.fixed_dictionaries({}, optional=fields)))
    if chat and draw(st.booleans()):  # a longer conversation, often out of order
        value["messages"] = draw(st.lists(message, min_size=1, max_size=5))
    method, encoding, ascii_only = "POST" if path in ("/v1/chat/completions", "/generate") else "GET", "utf-8", True
    headers = {"Content-Type": "application/json", "Authorization": "Bearer k"}
    body = None
    for mutation in draw(st.lists(st.sampled_from(["field", "field", "drop", "top", "encoding", "bytes", "deep",
                                                   "huge", "content-type", "auth", "host", "method"]), max_size=3)):
        if mutation == "field" and isinstance(value, dict):
            value[draw(st.sampled_from([*fields, "messages" if chat else "prompt", "extra"]))] = draw(json_value)
        elif mutation == "drop" and isinstance(value, dict) and value:
            value.pop(draw(st.sampled_from(sorted(value))))
        elif mutation == "top":
            value = draw(json_value)
        elif mutation == "encoding":
            encoding, ascii_only = draw(st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1"])), draw(st.booleans())
        elif mutation == "bytes":
            body = draw(st.binary(max_size=200))
        elif mutation == "deep":
            depth = draw(st.integers(1, FUZZ_BODY_LIMIT // 2 - 20))
            opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"role":"user","content":', "}]")]))
            body = ('{"messages":' + opener * depth + '"x"' + closer * depth + "}").encode()[:FUZZ_BODY_LIMIT - 1]
        elif mutation == "huge":
            body = b'{"prompt": "' + b"x" * draw(st.integers(FUZZ_BODY_LIMIT - 20, 3 * FUZZ_BODY_LIMIT)) + b'"}'
        elif mutation == "content-type":
            headers["Content-Type"] = draw(st.sampled_from(["text/plain", "", "application/json; charset=utf-16"])
                                           | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20))
        elif mutation == "auth":
            headers["Authorization"] = draw(st.sampled_from(["bearer k", "Bearer kk", "Basic k", ""])
                                            | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20))
        elif mutation == "host":
            headers["Host"] = draw(st.sampled_from(["localhost", "evil.example", "[::1]:1", "a" * 300])
                                   | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=20))
        elif mutation == "method":
            method = draw(st.sampled_from(["GET", "PUT", "DELETE", "POST"]))
    if body is None:
        body = json.dumps(value, ensure_ascii=ascii_only).encode(encoding, errors="replace")
    return method, path, {k: v for k, v in headers.items() if v}, body


@pytest.fixture(scope="module")
def fuzz_server(model, tiny_tokenizer):
    app = create_app(model, tiny_tokenizer, model_name="tiny", api_key="k", workers=2, max_queue=4,
                     max_tokens_limit=4, max_n=2, max_body_bytes=FUZZ_BODY_LIMIT)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield url, client


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=os.environ.get("HF_NANOGPT_FUZZ_RANDOM") != "1",
          database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests())
def test_fuzz_no_request_gets_a_5xx(fuzz_server, request):
    url, client = fuzz_server
    method, path, headers, body = request
    try:
        with client.stream(method, path, content=body, headers=headers) as r:
            payload = r.read()
    except httpx.LocalProtocolError:  # httpx itself refuses to send it (e.g. a header it finds illegal)
        return
    assert r.status_code < 500, (r.status_code, payload[:300])
    if r.status_code == 200 and r.headers.get("content-type", "").startswith("text/event-stream"):
        text = payload.decode()
        assert text.endswith("data: [DONE]\n\n") and '"error"' not in text


def test_fuzz_leaves_a_live_idle_server(fuzz_server):
    url, client = fuzz_server
    assert wait_for(lambda: client.get("/health").json()["busy"] == 0 and client.get("/health").json()["queued"] == 0)
    r = client.post("/v1/chat/completions", json={"messages": USER}, headers={"Authorization": "Bearer k"})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
