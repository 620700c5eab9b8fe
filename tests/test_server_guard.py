"""Browser-origin safety and limits of the chat server (hf_nanogpt.server_guard) on a REAL loopback
server: the Host check (DNS rebinding), JSON-only POSTs, CORS only when configured, the body-size
limit answered before parsing, the bearer scheme in any case with a constant-time compare, and the
API docs behind the key and served without a CDN."""

import re

import httpx
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from hf_nanogpt import server_guard
from hf_nanogpt.server import create_app
from hf_nanogpt.server_guard import host_middleware_hosts

from test_server import USER, live_server, post  # noqa: E402  (tests/ is on sys.path under pytest)

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
