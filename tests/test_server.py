"""The OpenAI-compatible server, tested against a REAL uvicorn server on a free loopback port with
httpx and the official `openai` client: plain and streaming completions (readable content plus the
raw control-token text), `POST /generate`, bad requests, the API key, concurrent clients, a client
that disconnects mid-stream (or while queued) freeing its worker slot, and a property-based fuzz
test that no request a client can send gets a 5xx."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

# The server needs the `serve` extra; a plain `pip install -e ".[dev]"` skips these tests, saying why.
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")
import torch
import uvicorn

from hf_nanogpt import NanoGPTConfig, NanoGPTForCausalLM
from hf_nanogpt.engine import ChatTokens, Engine, TextStream, assistant_parts
from hf_nanogpt.server import create_app
from hf_nanogpt.server_schema import readable_text
from hf_nanogpt.tokenization import render_for_completion

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def tiny_chat_model(tokenizer, seed: int = 0, context: int = 256) -> NanoGPTForCausalLM:
    """A random tiny NanoGPT over the tokenizer's vocabulary (weights spread out, so replies vary)."""
    torch.manual_seed(seed)
    config = NanoGPTConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=context)
    model = NanoGPTForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def slow_model(tokenizer, delay: float) -> NanoGPTForCausalLM:
    """A tiny model that takes `delay` seconds per forward and never ends a reply on its own (its
    stop-token logits are -inf), so a generation lasts exactly max_tokens steps."""
    model = tiny_chat_model(tokenizer, seed=1)
    stop = sorted(ChatTokens.from_tokenizer(tokenizer).stop_ids)
    model.forward_calls = 0

    def hook(module, args, output):
        time.sleep(delay)
        module.forward_calls += 1
        output.logits[..., stop] = float("-inf")
        return output

    model.register_forward_hook(hook)
    return model


def calculator_model(tokenizer, expr: str, after: str, prompts: list | None = None):
    """A scripted model that answers every question with a calculator call on `expr`, then writes
    `after` and ends; the engine forces the tool's output in between. `prompts` collects the
    histories the model saw at the start of each reply."""
    from test_engine import ScriptedLM  # noqa: E402  (tests/ is on sys.path under pytest)

    ids = lambda name: tokenizer.convert_tokens_to_ids(name)  # noqa: E731
    call = [ids("<|python_start|>"), *tokenizer.encode(expr, add_special_tokens=False), ids("<|python_end|>")]
    tail = tokenizer.encode(after, add_special_tokens=False)

    def rule(history):
        if ids("<|assistant_start|>") not in history:  # prefill positions: any answer will do
            return 0
        reply = history[len(history) - history[::-1].index(ids("<|assistant_start|>")):]
        if not reply and prompts is not None:
            prompts.append(history)
        if len(reply) < len(call):
            return call[len(reply)]
        if ids("<|output_end|>") not in reply:
            return tail[0]  # the engine forces the tool output here instead
        k = len(reply) - reply.index(ids("<|output_end|>")) - 1
        return tail[k] if k < len(tail) else ids("<|assistant_end|>")

    return ScriptedLM(rule, vocab_size=len(tokenizer))


@contextlib.contextmanager
def live_server(app):
    """Run `app` under uvicorn in a thread on a free 127.0.0.1 port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return tiny_chat_model(tiny_tokenizer)


@pytest.fixture(scope="module")
def server(model, tiny_tokenizer):
    with live_server(create_app(model, tiny_tokenizer, model_name="tiny", workers=2, max_tokens_limit=64)) as url:
        yield url


def post(url: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kwargs.setdefault("timeout", 60)
    return httpx.post(f"{url}/v1/chat/completions", content=content,
                      headers={"Content-Type": "application/json", **kwargs.pop("headers", {})}, **kwargs)


def sse_events(response: httpx.Response) -> list:
    """Parse an SSE body into JSON chunks; the final `[DONE]` is returned as the string."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def greedy_reply(model, tokenizer, messages, max_tokens: int) -> str:
    engine = Engine.from_tokenizer(model, tokenizer)
    tokens = engine.generate_batch(render_for_completion(tokenizer, messages), temperature=0.0,
                                   max_tokens=max_tokens)[0][0]
    return tokenizer.decode(tokens, skip_special_tokens=False)


# ----------------------------------------------------------------------------- plain and streaming


def test_plain_completion_has_openai_shape_and_the_engines_tokens(server, model, tiny_tokenizer):
    r = post(server, {"model": "tiny", "messages": USER, "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == "tiny"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    raw = greedy_reply(model, tiny_tokenizer, USER, 12)
    assert choice["message"]["raw_content"] == raw
    assert choice["message"]["content"] == readable_text(raw) and "<|" not in choice["message"]["content"]
    prompt_tokens = len(render_for_completion(tiny_tokenizer, USER))
    usage = body["usage"]
    assert usage["prompt_tokens"] == prompt_tokens
    assert usage["total_tokens"] == prompt_tokens + usage["completion_tokens"]
    assert (choice["finish_reason"], usage["completion_tokens"]) in {("length", 12)} | {
        ("stop", n) for n in range(1, 13)}


def test_streaming_sends_the_same_reply_as_deltas(server):
    plain = post(server, {"messages": USER, "max_tokens": 20, "temperature": 0}).json()
    with httpx.stream("POST", f"{server}/v1/chat/completions", timeout=60,
                      json={"messages": USER, "max_tokens": 20, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    content_chunks = chunks[1:-1]
    assert len(content_chunks) >= 3  # token by token, not one blob
    for field in ("content", "raw_content"):
        text = "".join(c["choices"][0]["delta"].get(field, "") for c in content_chunks)
        assert text == plain["choices"][0]["message"][field]
    reasons = [c["choices"][0]["finish_reason"] for c in content_chunks]
    assert reasons[-1] == plain["choices"][0]["finish_reason"] and set(reasons[:-1]) == {None}


def test_n_samples_with_seed_are_reproducible(server):
    body = {"messages": USER, "max_tokens": 10, "n": 3, "temperature": 1.0, "seed": 7}
    first, second = post(server, body).json(), post(server, body).json()
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in first["choices"]]
    assert texts == [c["message"]["content"] for c in second["choices"]]
    assert len(set(texts)) > 1


def test_multi_turn_and_tool_history_are_accepted(server, tiny_tokenizer):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "3*4?"},
        {"role": "assistant", "content": "<|python_start|>3*4<|python_end|><|output_start|>12<|output_end|>12"},
        {"role": "user", "content": [{"type": "text", "text": "and 5*5?"}]},
    ]
    r = post(server, {"messages": history, "max_tokens": 4})
    assert r.status_code == 200, r.text
    # the assistant turn went back in as tool parts, i.e. the real control tokens
    parts = assistant_parts(history[2]["content"])
    assert parts == [{"type": "python", "text": "3*4"}, {"type": "output", "text": "12"},
                     {"type": "text", "text": "12"}]
    expected_prompt = render_for_completion(tiny_tokenizer, [*history[:2], {"role": "assistant", "content": parts},
                                                             {"role": "user", "content": "and 5*5?"}])
    assert r.json()["usage"]["prompt_tokens"] == len(expected_prompt)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        ({"max_tokens": 5}, 400, "messages: Field required"),
        ({"messages": []}, 400, "messages is empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "unknown role 'tool'"),
        ({"messages": [{"role": "user"}]}, 400, "content is missing"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400, "out of order"),
        ({"messages": [*USER, {"role": "assistant", "content": "4"}]}, 400, "last message must come from the user"),
        ({"messages": USER, "max_tokens": 65}, 400, "max_tokens=65 exceeds the server limit of 64"),
        ({"messages": USER, "max_completion_tokens": 1000}, 400, "max_completion_tokens=1000 exceeds"),
        ({"messages": USER, "max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
        ({"messages": [{"role": "user", "content": "word " * 400}]}, 400, "model's context is 256 tokens"),
        ({"messages": USER, "temperature": "hot"}, 400, "temperature: Input should be a valid number"),
        ({"messages": USER, "temperature": 5}, 400, "temperature: Input should be less than or equal to 2"),
        ({"messages": USER, "n": 9}, 400, "n=9 exceeds the server limit of 8"),
        ({"messages": USER, "stop": ["\n"]}, 400, "stop sequences are not supported"),
        ({"messages": USER, "model": "gpt-4"}, 404, "model 'gpt-4' is not served here"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_get_4xx_with_a_message(server, body, status, message, stream):
    if stream and isinstance(body, dict):
        body = {**body, "stream": True}
    r = post(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"]


def test_api_key(model, tiny_tokenizer):
    with live_server(create_app(model, tiny_tokenizer, api_key="s3cret")) as url:
        body = {"messages": USER, "max_tokens": 2}
        assert post(url, body).status_code == 401
        r = post(url, body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert post(url, body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/health").json()["auth"] is True  # the page asks for a key then


def test_models_health_and_page(server):
    models = httpx.get(f"{server}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny"
    assert models["data"][0]["context_length"] == 256
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["workers"] == 2 and health["busy"] == 0
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and 'id="input"' in page.text and "/static/chat.js" in page.text
    assert "serverSentEvents" in httpx.get(f"{server}/static/chat.js").text


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_clients_are_all_answered(tiny_tokenizer):
    model = slow_model(tiny_tokenizer, delay=0.005)
    app = create_app(model, tiny_tokenizer, workers=2)
    clients, results, peak = 6, {}, {"busy": 0, "queued": 0}

    def client(i: int) -> None:
        body = {"messages": [{"role": "user", "content": f"client {i}"}], "max_tokens": 25, "stream": i % 2 == 0}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            results[i] = (r.status_code, sse_events(r) if body["stream"] else json.loads(r.read()))

    with live_server(app) as url:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            health = httpx.get(f"{url}/health").json()
            peak = {k: max(peak[k], health[k]) for k in peak}
            time.sleep(0.02)
        final = httpx.get(f"{url}/health").json()
    assert sorted(results) == list(range(clients))
    for i, (status, body) in results.items():
        assert status == 200
        if i % 2 == 0:
            assert body[-1] == "[DONE]" and body[-2]["choices"][0]["finish_reason"] == "length"
        else:
            assert body["usage"]["completion_tokens"] == 25
    assert peak["busy"] == 2 and peak["queued"] >= 1  # a worker queue: 2 at a time, the rest waited
    assert final["served"] == clients and final["busy"] == 0 and final["queued"] == 0


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_disconnect_mid_stream_frees_the_slot(tiny_tokenizer):
    model = slow_model(tiny_tokenizer, delay=0.02)  # 500 tokens would take >= 10 s
    with live_server(create_app(model, tiny_tokenizer, workers=1, max_tokens_limit=500)) as url:
        health = lambda: httpx.get(f"{url}/health").json()  # noqa: E731

        def short_request_calls() -> int:
            """Forward calls made while one 5-token request is served. With one worker, a generation
            still running after its client left would add its own calls to this count."""
            before = model.forward_calls
            assert post(url, {"messages": USER, "max_tokens": 5}).status_code == 200
            return model.forward_calls - before

        alone = short_request_calls()
        body = {"messages": USER, "max_tokens": 500, "stream": True}
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                lines = r.iter_lines()
                received = sum(1 for _, line in zip(range(8), lines) if line.startswith("data: "))
                assert received >= 3 and health()["busy"] == 1
                # a second client queues behind the long one, then leaves too
                queued = httpx.Client(timeout=30)
                queued_stream = queued.stream("POST", f"{url}/v1/chat/completions", json=body)
                queued_response = queued_stream.__enter__()
                assert wait_for(lambda: health()["queued"] == 1)
                queued_stream.__exit__(None, None, None)
                queued.close()
                assert wait_for(lambda: health()["queued"] == 0)
        # the first client is gone: its generation stops and the only slot is free again
        assert wait_for(lambda: health()["busy"] == 0)
        assert model.forward_calls < 250, "generation ran on after the client left"
        assert short_request_calls() == alone  # nothing else is generating
        assert health()["served"] == 3  # the two short requests and the long one; the queued one never ran
        assert queued_response.status_code == 200
        # a plain (non-streaming) request whose client gives up is cancelled as well
        with pytest.raises(httpx.ReadTimeout):
            post(url, {"messages": USER, "max_tokens": 500}, timeout=0.5)
        assert wait_for(lambda: health()["busy"] == 0)
        assert short_request_calls() == alone


def test_calculator_tool_call_in_the_reply(tiny_tokenizer):
    """A scripted model calls the calculator; the forced result appears in plain and streamed replies."""
    raw = "<|python_start|>6*7<|python_end|><|output_start|>42<|output_end|> is the answer"
    with live_server(create_app(calculator_model(tiny_tokenizer, "6*7", " is the answer"), tiny_tokenizer)) as url:
        plain = post(url, {"messages": USER, "max_tokens": 40}).json()["choices"][0]
        assert plain["finish_reason"] == "stop"
        assert plain["message"]["content"] == "calc: 6*7 = 42 is the answer"  # as the chat page shows it
        assert plain["message"]["raw_content"] == raw
        assert plain["message"]["segments"] == [{"type": "python", "text": "6*7"}, {"type": "output", "text": "42"},
                                                {"type": "text", "text": " is the answer"}]
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={"messages": USER, "stream": True}) as r:
            chunks = sse_events(r)[1:-1]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        assert "".join(d.get("content", "") for d in deltas) == "calc: 6*7 = 42 is the answer"
        assert "".join(d.get("raw_content", "") for d in deltas) == raw


def test_a_full_queue_is_refused_with_503(tiny_tokenizer):
    model = slow_model(tiny_tokenizer, delay=0.02)
    body = {"messages": USER, "max_tokens": 200, "stream": True}
    with live_server(create_app(model, tiny_tokenizer, workers=1, max_queue=1)) as url:
        health = lambda: httpx.get(f"{url}/health").json()  # noqa: E731
        with httpx.Client(timeout=30) as running, httpx.Client(timeout=30) as waiting:
            with running.stream("POST", f"{url}/v1/chat/completions", json=body):
                assert wait_for(lambda: health()["busy"] == 1)
                with waiting.stream("POST", f"{url}/v1/chat/completions", json=body):
                    assert wait_for(lambda: health()["queued"] == 1)
                    for refused in (post(url, {"messages": USER}), post(url, body)):
                        assert refused.status_code == 503
                        assert "server busy: 1 requests generating and 1 queued" in refused.json()["error"]["message"]
        assert wait_for(lambda: health()["busy"] == 0 and health()["queued"] == 0)
        assert post(url, {"messages": USER, "max_tokens": 3}).status_code == 200


def test_a_failing_model_is_reported_and_frees_its_slot(tiny_tokenizer):
    model = tiny_chat_model(tiny_tokenizer)
    calls = []

    def explode(module, args, output):
        calls.append(1)
        if len(calls) == 3:  # fail mid-generation
            raise RuntimeError("device lost")

    model.register_forward_hook(explode)
    with live_server(create_app(model, tiny_tokenizer)) as url:
        r = post(url, {"messages": USER, "max_tokens": 10})
        assert r.status_code == 500 and r.json()["error"]["message"] == "internal error: RuntimeError: device lost"
        calls.clear()
        with httpx.stream("POST", f"{url}/v1/chat/completions",
                          json={"messages": USER, "max_tokens": 10, "stream": True}) as r:
            events = sse_events(r)
        assert r.status_code == 200 and events[-1] == "[DONE]"
        assert events[-2] == {"error": {"message": "internal error: RuntimeError: device lost", "type": "server_error"}}
        health = lambda: httpx.get(f"{url}/health").json()  # noqa: E731
        assert wait_for(lambda: (health()["busy"], health()["served"]) == (0, 2))


def test_text_stream_holds_back_partial_characters(tiny_tokenizer):
    ids = tiny_tokenizer.encode("héllo → wörld ✓", add_special_tokens=False)
    stream = TextStream(lambda t: tiny_tokenizer.decode(t))
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == "héllo → wörld ✓" and "\ufffd" not in "".join(pieces)


# ----------------------------------------------------------------------------- the script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_web_script_serves_a_saved_model(tmp_path, tiny_tokenizer, repo_root):
    folder = tmp_path / "sft"
    tiny_chat_model(tiny_tokenizer).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(repo_root), "HF_NANOGPT_BASE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(repo_root / "scripts" / "chat_web.py"), "--model", "sft",
                             "--port", str(port), "--max_tokens_limit", "16"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{url}/health").status_code == 200
            return False

        assert wait_for(up, timeout=120)
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "sft"
        r = post(url, {"messages": USER, "max_tokens": 16})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        assert post(url, {"messages": USER, "max_tokens": 17}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- POST /generate


def test_generate_continues_the_prompt_as_plain_text(server, model, tiny_tokenizer):
    r = httpx.post(f"{server}/generate", json={"prompt": "def main():", "max_tokens": 10, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"generated_text", "prompt"} and body["prompt"] == "def main():"
    engine = Engine.from_tokenizer(model, tiny_tokenizer)
    prompt = [tiny_tokenizer.convert_tokens_to_ids("<|bos|>")] + tiny_tokenizer.encode("def main():",
                                                                                       add_special_tokens=False)
    tokens = engine.generate_batch(prompt, temperature=0.0, max_tokens=10)[0][0]
    assert body["generated_text"] == tiny_tokenizer.decode(tokens, skip_special_tokens=False)


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "prompt: Field required"),
    ({"prompt": ""}, 400, "prompt: String should have at least 1 character"),
    ({"prompt": 5}, 400, "prompt: Input should be a valid string"),
    ({"prompt": "x", "max_tokens": "5"}, 400, "max_tokens: Input should be a valid integer"),
    ({"prompt": "x", "max_tokens": 65}, 400, "max_tokens=65 exceeds the server limit of 64"),
    ({"prompt": "x", "temperature": 3}, 400, "temperature: Input should be less than or equal to 2"),
    ({"prompt": "x", "top_k": 3}, 400, "top_k: Extra inputs are not permitted"),
    ({"prompt": "word " * 400}, 400, "model's context is 256 tokens"),
    ({"prompt": "x" * 20_000}, 400, "the prompt is at least"),
])
def test_generate_bad_requests(server, body, status, message):
    r = httpx.post(f"{server}/generate", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_generate_needs_the_key_and_counts_in_the_pool(model, tiny_tokenizer):
    with live_server(create_app(model, tiny_tokenizer, api_key="k", max_tokens_limit=8)) as url:
        assert httpx.post(f"{url}/generate", json={"prompt": "x"}).status_code == 401
        r = httpx.post(f"{url}/generate", json={"prompt": "x"}, headers={"Authorization": "Bearer k"}, timeout=60)
        assert r.status_code == 200 and httpx.get(f"{url}/health").json()["served"] == 1


def test_a_prompt_past_the_context_is_refused_before_tokenizing(model, tiny_tokenizer, monkeypatch):
    """A message that cannot fit (by its byte count) never reaches the tokenizer, so a maximal request
    costs only its JSON parse; one that might fit is rendered and checked exactly."""
    import hf_nanogpt.server as server_module

    rendered = []
    real = server_module.render_for_completion
    monkeypatch.setattr(server_module, "render_for_completion", lambda *a: rendered.append(1) or real(*a))
    with live_server(create_app(model, tiny_tokenizer)) as url:
        r = post(url, {"messages": [{"role": "user", "content": "x" * 3_000_000}]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert "the prompt is at least" in r.json()["error"]["message"] and rendered == []
        r = post(url, {"messages": [{"role": "user", "content": "word " * 300}]})
        message = r.json()["error"]["message"]
        assert r.status_code == 400 and "model's context" in message and "at least" not in message and rendered == [1]
        too_big = b'{"messages": [{"role": "user", "content": "' + b"x" * (5 << 20) + b'"}]}'
        assert post(url, too_big).status_code == 413


# ----------------------------------------------------------------------------- the official openai client


def test_openai_client_plain_streaming_n2_and_errors(tiny_tokenizer):
    """The `openai` package against the server: models, a completion whose content is readable text
    (the calculator call as the page shows it), the same streamed, n=2, and auth / bad-request errors."""
    openai = pytest.importorskip("openai", reason="the openai client is a dev dependency: pip install openai")
    readable, raw = "calc: 12*34 = 408\n#### 408", "<|python_start|>12*34<|python_end|><|output_start|>408<|output_end|>#### 408"
    app = create_app(calculator_model(tiny_tokenizer, "12*34", "#### 408"), tiny_tokenizer, model_name="tiny", api_key="k")
    with live_server(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list()] == ["tiny"]
        messages = [{"role": "user", "content": "What is 12*34?"}]
        done = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30)
        (choice,) = done.choices
        assert choice.message.content == readable and choice.finish_reason == "stop"
        assert choice.message.model_extra["raw_content"] == raw  # the documented extension fields
        assert choice.message.model_extra["segments"][1] == {"type": "output", "text": "408"}
        assert done.usage.completion_tokens > 0
        stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, stream=True,
                                                stream_options={"include_usage": True})
        content, raw_parts, reasons, usage = "", "", [], None
        for chunk in stream:
            usage = chunk.usage or usage
            for c in chunk.choices:
                content += c.delta.content or ""
                raw_parts += (c.delta.model_extra or {}).get("raw_content", "")
                reasons.append(c.finish_reason)
        assert (content, raw_parts) == (readable, raw) and reasons[-1] == "stop"
        assert usage.completion_tokens == done.usage.completion_tokens
        two = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, n=2)
        assert [c.index for c in two.choices] == [0, 1] and {c.message.content for c in two.choices} == {readable}
        # the assistant turn sent back by a client keeps its tool parts through raw_content
        history = [*messages, {"role": "assistant", "content": readable, "raw_content": raw},
                   {"role": "user", "content": "again"}]
        again = client.chat.completions.create(model="tiny", messages=history, max_tokens=30)
        assert again.choices[0].message.content == readable
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.BadRequestError, match="exceeds the server limit"):
            client.chat.completions.create(model="tiny", messages=messages, max_tokens=10_000)
        with pytest.raises(openai.NotFoundError, match="not served here"):
            client.chat.completions.create(model="gpt-4", messages=messages)
