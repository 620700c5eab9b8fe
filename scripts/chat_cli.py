"""Chat with a model in the terminal; replies stream token by token.

    python scripts/chat_cli.py -i sft                          # interactive, $HF_NANOGPT_BASE_DIR/sft
    python scripts/chat_cli.py -i sft -p "Why is the sky blue?"  # one reply, printed to stdout
    python scripts/chat_cli.py -i out/mid -t 0 --max_tokens 64   # greedy, another folder

Interactive commands: `clear` starts a new conversation, `quit` (or `exit`, or Ctrl-D) leaves. The
conversation history is kept between turns. Calculator tool calls are run by the engine and shown
inline as `<|python_start|>expr<|python_end|><|output_start|>result<|output_end|>`.
"""

import argparse
import sys

from hf_nanogpt.cli import run_script


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--model", default="sft", help="model folder, or a stage name (base, mid, sft)")
    parser.add_argument("-p", "--prompt", default=None, help="answer this one message and exit")
    parser.add_argument("-s", "--system", default=None, help="system message, merged into the first user turn")
    parser.add_argument("-t", "--temperature", type=float, default=0.6)
    parser.add_argument("-k", "--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--max_tokens", type=int, default=512, help="tokens per reply at most")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from hf_nanogpt.paths import resolve_model_folder

    try:
        resolve_model_folder(args.model)  # a missing or non-model folder fails before torch is imported
    except FileNotFoundError as err:
        sys.exit(f"chat_cli: {err}")
    import torch

    from hf_nanogpt.engine import Engine, TextStream, assistant_parts
    from hf_nanogpt.paths import load_model_and_tokenizer
    from hf_nanogpt.tokenization import render_for_completion

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, tokenizer = load_model_and_tokenizer(args.model, device=device, dtype=getattr(torch, args.dtype))
    except FileNotFoundError as err:
        sys.exit(f"chat_cli: {err}")
    engine = Engine.from_tokenizer(model, tokenizer)
    stop_ids = engine.tokens.stop_ids

    def reply(history: list[dict]) -> str:
        """Stream the model's answer to `history` to stdout; return it as text."""
        prompt = render_for_completion(tokenizer, history)
        if engine.max_context is not None and len(prompt) >= engine.max_context:
            raise ValueError(f"the conversation is {len(prompt)} tokens, the context {engine.max_context}: type clear")
        stream = TextStream(lambda ids: tokenizer.decode(ids, skip_special_tokens=False))
        pieces = []
        for column, _ in engine.generate(prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                         top_k=args.top_k, top_p=args.top_p, seed=args.seed):
            token = column[0]
            piece = stream.flush() if token in stop_ids else stream.push(token)
            pieces.append(piece)
            print(piece, end="", flush=True)
        pieces.append(tail := stream.flush())
        print(tail, flush=True)
        return "".join(pieces)

    def first_turn() -> list[dict]:
        return [{"role": "system", "content": args.system}] if args.system else []

    history = first_turn()
    if args.prompt is not None:
        history.append({"role": "user", "content": args.prompt})
        try:
            reply(history)
        except ValueError as err:
            sys.exit(f"chat_cli: {err}")
        return

    print(f"Chatting with {args.model} on {device}. Type 'clear' for a new conversation, 'quit' to leave.")
    while True:
        try:
            text = input("\nUser: ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if text.lower() in ("quit", "exit"):
            break
        if text.lower() == "clear":
            history = first_turn()
            print("(conversation cleared)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        print("Assistant: ", end="", flush=True)
        try:
            answer = reply(history)
        except ValueError as err:
            history.pop()
            print(f"\n(error: {err})")
            continue
        except KeyboardInterrupt:  # Ctrl-C stops this reply, keeps the chat
            answer = ""
            print("\n(interrupted)")
        history.append({"role": "assistant", "content": assistant_parts(answer)})


if __name__ == "__main__":
    run_script(main)
