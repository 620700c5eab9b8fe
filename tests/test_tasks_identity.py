"""scripts/gen_identity_data.py against a small OpenAI-compatible server on 127.0.0.1."""

import json
import re
import runpy
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hf_nanogpt.tasks import get_task
from hf_nanogpt.tasks.identity import FIRST_PROMPTS, parse_conversation


class FakeChatServer(ThreadingHTTPServer):
    """Answers POST /v1/chat/completions like an OpenAI endpoint; the first reply is not JSON and the
    second is an HTTP 500, so the client's retries are exercised."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests, self.lock, self.count = [], threading.Lock(), 0

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.count += 1
            n = server.count
            server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if n == 2:
            return self._send(500, {"error": "overloaded"})
        prompt = re.search(r"first message is exactly: (.*)\n", body["messages"][0]["content"]).group(1)
        turns = int(re.search(r"has (\d) user message", body["messages"][0]["content"]).group(1))
        messages = [{"role": "user", "content": prompt.strip("'\"") + " (paraphrased)"}]
        messages.append({"role": "assistant", "content": "I am hf_nanogpt, a small model."})
        for i in range(1, turns):
            messages += [{"role": "user", "content": f"follow-up {i}"}, {"role": "assistant", "content": "Sure."}]
        content = "this is not json" if n == 1 else "```json\n" + json.dumps({"messages": messages}) + "\n```"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    srv = FakeChatServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_generates_valid_customjson(server, tmp_path, repo_root, capsys):
    main = runpy.run_path(str(repo_root / "scripts" / "gen_identity_data.py"))["main"]
    main(["-n", "6", "--output_dir", str(tmp_path), "--base_url", server.base_url, "--api_key", "test-key",
          "--model", "fake-model", "--workers", "2", "--retries", "2"])
    assert "wrote 6 of 6 conversations" in capsys.readouterr().out
    path = tmp_path / "identity_conversations.jsonl"
    task = get_task("customjson", path=path)  # every line validates as CustomJSON
    assert len(task) == 6
    for row in task:
        assert row["messages"][0]["content"] in FIRST_PROMPTS  # the drawn prompt, not the model's paraphrase
        assert row["messages"][1]["content"] == "I am hf_nanogpt, a small model."
    assert len(server.requests) == 8  # 6 conversations + one non-JSON reply + one HTTP 500, both retried
    assert {r["auth"] for r in server.requests} == {"Bearer test-key"}
    assert {r["body"]["model"] for r in server.requests} == {"fake-model"}
    assert all(r["path"] == "/v1/chat/completions" for r in server.requests)


def test_exhausted_retries_fail_loudly(server, tmp_path, repo_root):
    main = runpy.run_path(str(repo_root / "scripts" / "gen_identity_data.py"))["main"]
    with pytest.raises(SystemExit, match="1 conversation\\(s\\) failed every retry"):
        main(["-n", "1", "--output_dir", str(tmp_path), "--base_url", server.base_url, "--retries", "1",
              "--workers", "1"])


def test_parse_conversation_rejects_bad_replies():
    with pytest.raises(ValueError, match="reply is not JSON"):
        parse_conversation("Sure! Here it is:", "hi")
    with pytest.raises(ValueError, match="does not start with the user"):
        parse_conversation('{"messages": [{"role": "assistant", "content": "hi"}]}', "hi")
    with pytest.raises(ValueError, match="the last message must be the assistant's"):
        parse_conversation('{"messages": [{"role": "user", "content": "x"}]}', "hi")
