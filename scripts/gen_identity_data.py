"""Generate identity conversations (CustomJSON) with any OpenAI-compatible chat endpoint.

    OPENAI_API_KEY=sk-... python scripts/gen_identity_data.py -n 500 --output_dir out/data
    python scripts/gen_identity_data.py -n 200 --base_url https://openrouter.ai/api/v1 \\
        --api_key $OPENROUTER_API_KEY --model google/gemini-2.5-flash --output_dir out/data
    python scripts/gen_identity_data.py -n 50 --base_url http://localhost:8000/v1 --model local --output_dir out/data

Writes OUTPUT_DIR/identity_conversations.jsonl; a mixture then names it:
    - {task: customjson, path: out/data/identity_conversations.jsonl, repeat: 2}
"""

import argparse
import logging
import os
from pathlib import Path

from hf_nanogpt.cli import run_script
from hf_nanogpt.tasks.identity import DEFAULT_IDENTITY, generate_identity_conversations


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num", type=int, default=500, help="conversations to generate")
    parser.add_argument("--output_dir", required=True, help="folder of identity_conversations.jsonl")
    parser.add_argument("--base_url", default=os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                        help="OpenAI-compatible API base URL, up to and including /v1 (env OPENAI_BASE_URL)")
    parser.add_argument("--api_key", default=os.environ.get("OPENAI_API_KEY"),
                        help="bearer token (default: env OPENAI_API_KEY; none for local servers)")
    parser.add_argument("--model", default="gpt-4o-mini", help="model name the endpoint serves")
    parser.add_argument("--identity", default=DEFAULT_IDENTITY, help="who the assistant is (a paragraph)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first-prompt draws")
    parser.add_argument("--workers", type=int, default=4, help="parallel requests")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed or invalid reply")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output = Path(args.output_dir) / "identity_conversations.jsonl"
    written = generate_identity_conversations(args.num, output, base_url=args.base_url, api_key=args.api_key,
                                              model=args.model, identity=args.identity, seed=args.seed,
                                              workers=args.workers, retries=args.retries, timeout=args.timeout)
    print(f"wrote {written} of {args.num} conversations to {output}")
    if written < args.num:
        raise SystemExit(f"{args.num - written} conversation(s) failed every retry (see the warnings)")


if __name__ == "__main__":
    run_script(main)
