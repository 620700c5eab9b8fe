"""Serve a chat model: the web page at / and an OpenAI-compatible API at /v1 (FastAPI + uvicorn).

    python scripts/chat_web.py --model sft                    # $HF_NANOGPT_BASE_DIR/sft on 127.0.0.1:8000
    python scripts/chat_web.py --model out/sft --port 8080 --workers 2
    python scripts/chat_web.py --model sft --host 0.0.0.0 --api_key "$KEY"   # reachable from other hosts

Then open http://127.0.0.1:8000/ or use any OpenAI client:

    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
         -d '{"messages": [{"role": "user", "content": "Why is the sky blue?"}], "stream": true}'

and nanoGPT's simple API:

    curl http://127.0.0.1:8000/generate -H 'Content-Type: application/json' \
         -d '{"prompt": "def fibonacci(n):", "max_tokens": 64, "temperature": 0.8}'

Concurrency: `--workers` requests generate at once, later ones wait in a FIFO queue (at most
`--max_queue`); see `hf_nanogpt/server.py`. The API key may also come from $HF_NANOGPT_API_KEY.
Browser safety: requests must name this server in their Host header (the loopback names, or the
`--host` address; `--allowed_hosts` lists others), and no other web origin may call the API unless
`--cors_origins` names it. API docs: /docs (behind the key when one is set; `--no_docs` turns them off).
"""

import argparse
import logging
import os

from hf_nanogpt.cli import nonnegative_int, port, positive_int, run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-i", default="sft", help="model folder, or a stage name inside the run folder")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument("--api_key", default=os.environ.get("HF_NANOGPT_API_KEY"),
                        help="require 'Authorization: Bearer KEY' on /v1 (default: $HF_NANOGPT_API_KEY)")
    parser.add_argument("--served_model_name", default=None, help="model id in the API (default: folder name)")
    parser.add_argument("--workers", type=positive_int, default=1, help="requests generating at the same time")
    parser.add_argument("--max_queue", type=nonnegative_int, default=64, help="requests allowed to wait; more get 503")
    parser.add_argument("--max_tokens_limit", type=positive_int, default=1024, help="largest max_tokens a request may ask")
    parser.add_argument("--max_body_bytes", type=positive_int, default=4 * 1024 * 1024,
                        help="largest request body; larger ones get 413 before they are read (default: 4 MiB)")
    parser.add_argument("--allowed_hosts", default=None,
                        help="comma-separated Host names to accept (default: those of --host; '*' = any)")
    parser.add_argument("--cors_origins", default=None,
                        help="comma-separated web origins allowed to call the API from a browser (default: none)")
    parser.add_argument("--no_docs", action="store_true", help="do not serve /docs and /openapi.json")
    parser.add_argument("--temperature", type=float, default=0.8, help="default for requests that omit it")
    parser.add_argument("--top_k", type=int, default=50, help="default for requests that omit it")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from hf_nanogpt.paths import resolve_model_folder

    folder = resolve_model_folder(args.model)  # a missing folder fails here, before torch is imported
    import torch
    import uvicorn

    from hf_nanogpt.paths import load_model_and_tokenizer
    from hf_nanogpt.server import create_app
    from hf_nanogpt.server_guard import ANY_BINDS, LOOPBACK_BINDS, host_middleware_hosts

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("chat_web")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    hosts = host_middleware_hosts(args.host, split(args.allowed_hosts))
    model, tokenizer = load_model_and_tokenizer(folder, device=device, dtype=getattr(torch, args.dtype))
    app = create_app(model, tokenizer, model_name=args.served_model_name or folder.resolve().name,
                     api_key=args.api_key, workers=args.workers, max_queue=args.max_queue,
                     max_tokens_limit=args.max_tokens_limit, temperature=args.temperature, top_k=args.top_k,
                     max_body_bytes=args.max_body_bytes, allowed_hosts=hosts, cors_origins=split(args.cors_origins),
                     docs=not args.no_docs)
    if args.host not in LOOPBACK_BINDS and not args.api_key:
        log.warning("serving on %s without --api_key: anyone who can reach this host can use the model", args.host)
    if args.host in ANY_BINDS and hosts == ["*"]:
        log.warning("bound to every interface with any Host header accepted: name this server's host names with "
                    "--allowed_hosts to refuse DNS-rebinding requests")
    log.info("model %s on %s; open http://%s:%d/", folder, device, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    run_script(main)
