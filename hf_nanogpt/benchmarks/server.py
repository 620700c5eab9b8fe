"""Server responsiveness under hostile load: `/health` latency while maximal requests are processed.

The server (`scripts/chat_web.py`, its own process, as deployed) serves a random model of a real
context length. Clients then send, in a loop and at the same time:

1. `body`: a request as large as `--max_body_bytes` allows (one giant message): parsed, then refused
   from its byte count without being tokenized;
2. `tokenize`: the largest message the byte-count check lets through (context x the longest token's
   bytes, made of that longest token), so the tokenizer does the most work a request can ask;
3. `generate`: ordinary chat requests that generate `--new_tokens` tokens.

Meanwhile `/health` is polled; its latency is reported idle, under each kind of load alone and under
all three at once, side by side, as percentiles and as the loaded / idle ratio. The target is a p95 under 100 ms under load (reported,
not asserted: a benchmark, not a test).

    python scripts/bench.py server                      # CPU, ~2 minutes
    python scripts/bench.py server --context 4096 --clients 6 --seconds 20
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=2048, help="the model's max_position_embeddings")
    parser.add_argument("--vocab_size", type=int, default=4096, help="BPE trained on the stdlib corpus")
    parser.add_argument("--max_body_bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--clients", type=int, default=3, help="load clients per kind of request")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the idle and the loaded phase")
    parser.add_argument("--new_tokens", type=int, default=16, help="tokens per `generate` request")
    parser.add_argument("--workers", type=int, default=2, help="the server's --workers")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(folder: Path, context: int, vocab_size: int):
    """A random depth-2 model of `context` positions and a stdlib BPE, saved to `folder`; returns the
    longest token's text (what the `tokenize` request repeats)."""
    import torch

    from ..configuration_nanogpt import NanoGPTConfig
    from ..data.corpus import iter_stdlib_texts
    from ..modeling_nanogpt import NanoGPTForCausalLM
    from ..tokenization import token_bytes, train_tokenizer

    tokenizer = train_tokenizer(iter_stdlib_texts("train"), vocab_size=vocab_size, max_chars=2_000_000)
    torch.manual_seed(0)
    config = NanoGPTConfig.from_depth(2, aspect_ratio=64, head_dim=64, vocab_size=len(tokenizer),
                                      max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    NanoGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    sizes = token_bytes(tokenizer)
    longest = int(sizes.argmax())
    return tokenizer.decode([longest]), int(sizes[longest])


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"n": len(values), "p50_ms": 1000 * statistics.median(values), "p95_ms": 1000 * pick(0.95),
            "max_ms": 1000 * values[-1]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import httpx

    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="hf_nanogpt_bench_server_") as tmp:
        folder = Path(tmp) / "model"
        longest, longest_bytes = build_model(folder, args.context, args.vocab_size)
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        server = subprocess.Popen([sys.executable, str(repo / "scripts" / "chat_web.py"), "--model", str(folder),
                                   "--port", str(port), "--workers", str(args.workers),
                                   "--max_body_bytes", str(args.max_body_bytes), "--max_tokens_limit", "64"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start within 300 s")
                time.sleep(0.2)
            result = measure(url, args, longest, longest_bytes)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(result, indent=2))
    return result


def measure(url: str, args, longest: str, longest_bytes: int) -> dict:
    import httpx

    def poll(seconds: float) -> list[float]:
        latencies, end = [], time.monotonic() + seconds
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < end:
                start = time.perf_counter()
                client.get(f"{url}/health").raise_for_status()
                latencies.append(time.perf_counter() - start)
                time.sleep(0.02)
        return latencies

    # the bodies, built once: a maximal body, a maximal tokenization, an ordinary request
    filler = args.max_body_bytes - 200
    body = json.dumps({"messages": [{"role": "user", "content": "x" * filler}]}).encode()
    text = longest * max(1, (args.context - 8))  # just under the byte bound: context x longest-token bytes
    tokenize = json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": 1}).encode()
    generate = json.dumps({"messages": [{"role": "user", "content": "Why is the sky blue?"}],
                           "max_tokens": args.new_tokens}).encode()
    kinds = {"body": body, "tokenize": tokenize, "generate": generate}
    counts = {k: {} for k in kinds}

    def loaded_phase(names: tuple[str, ...]) -> list[float]:
        stop = threading.Event()

        def load(kind: str) -> None:
            with httpx.Client(timeout=120, headers={"Content-Type": "application/json"}) as client:
                while not stop.is_set():
                    status = client.post(f"{url}/v1/chat/completions", content=kinds[kind]).status_code
                    counts[kind][status] = counts[kind].get(status, 0) + 1

        threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in names for _ in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # let every client have a request in flight
        latencies = poll(args.seconds)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        return latencies

    phases = {"idle": _percentiles(poll(args.seconds))}
    for names in (("body",), ("tokenize",), ("generate",), tuple(kinds)):
        phases["+".join(names)] = _percentiles(loaded_phase(names))
    idle = phases["idle"]["p95_ms"]
    return {"health_latency": phases,
            "p95_ratio_over_idle": {k: v["p95_ms"] / idle for k, v in phases.items() if k != "idle"},
            "target": "p95 < 100 ms under load", "meets_target": all(v["p95_ms"] < 100 for v in phases.values()),
            "requests": {k: {str(s): n for s, n in v.items()} for k, v in counts.items()},
            "sizes": {"body_bytes": len(body), "tokenize_bytes": len(text.encode()), "longest_token_bytes": longest_bytes,
                      "context": args.context}}
