"""Synthetic identity conversations (who the model is, who made it) from any OpenAI-compatible endpoint.

For each conversation a first user message is drawn from `FIRST_PROMPTS` (greetings, questions about
the model, other languages, typos) and a chat model is asked, through `POST {base_url}/chat/completions`,
to write the whole conversation as JSON, in character as described by `identity`. Replies are parsed,
forced to start with the drawn user message and validated with `check_conversation`; a bad reply is
retried and, after `retries`, skipped with a warning. The output is CustomJSON: one
`{"messages": [...]}` per line, written to a temporary file and renamed when complete.

Only the standard library talks to the endpoint (urllib), so any server speaking the OpenAI chat API
works: OpenAI, OpenRouter, vLLM, llama.cpp, or the test's stand-in on 127.0.0.1.
"""

import json
import logging
import os
import random
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .base import check_conversation

logger = logging.getLogger(__name__)

DEFAULT_IDENTITY = (
    "You are hf_nanogpt, a small chat model trained from scratch with the hf_nanogpt project: nanoGPT and "
    "nanochat rebuilt on the Hugging Face libraries (tokenizers, transformers, datasets, accelerate). You "
    "are a few hundred million parameters at most, trained on a modest budget, so you make mistakes, "
    "especially with facts and arithmetic (for which you can use a calculator tool). You are not ChatGPT, "
    "Claude or any other assistant. You answer in English and say so politely when asked in another language."
)

FIRST_PROMPTS = (
    "hi", "Hello!", "hey there", "Good morning", "yo", "who are you?", "What's your name?", "what are you",
    "Are you ChatGPT?", "Are you made by OpenAI?", "Who created you?", "Who trained you?",
    "How big are you?", "how many parameters do you have", "What can you do?", "What can't you do?",
    "Are you conscious?", "Do you have feelings?", "Can you browse the internet?", "Can you do math?",
    "Are you open source?", "What data were you trained on?", "How were you trained?",
    "What is hf_nanogpt?", "What is nanochat?", "Can I run you on my laptop?", "tell me about yourself",
    "Hola, ¿quién eres?", "Bonjour, qui es-tu ?", "Hallo, wer bist du?", "你好，你是谁？", "Ciao!",
    "helo who r u", "wat is ur name", "Introduce yourself in one sentence.", "Are you smarter than GPT-4?",
    "Why are you so small?", "Do you make mistakes?", "What is your purpose?", "Can you remember our past chats?",
)

_INSTRUCTIONS = (
    "Write a short, natural conversation between a user and the assistant described below. {identity}\n\n"
    "The user's first message is exactly: {prompt!r}\n"
    "The conversation has {turns} user message(s), each followed by the assistant's reply; later user messages "
    "are natural follow-ups. Reply with JSON only, in this form:\n"
    '{{"messages": [{{"role": "user", "content": "..."}}, {{"role": "assistant", "content": "..."}}, ...]}}'
)


def chat_completion(base_url: str, api_key: str | None, model: str, messages: list[dict], *,
                    temperature: float = 1.0, timeout: float = 60.0) -> str:
    """The assistant text of one `POST {base_url}/chat/completions` call (the OpenAI chat API)."""
    body = json.dumps({"model": model, "messages": messages, "temperature": temperature,
                       "response_format": {"type": "json_object"}}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read()[:300].decode(errors="replace")
        raise RuntimeError(f"{request.full_url}: HTTP {err.code}: {detail}") from None
    try:
        return reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"{request.full_url}: unexpected reply {str(reply)[:300]}") from None


def parse_conversation(text: str, first_prompt: str) -> list[dict]:
    """The messages of a model's JSON reply (code fences tolerated), starting with `first_prompt`;
    raises ValueError when the reply is not a valid conversation."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"reply is not JSON ({err.msg})") from None
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list) or not messages:
        raise ValueError("reply has no 'messages' list")
    messages = [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m for m in messages]
    if messages[0].get("role") != "user":
        raise ValueError("the conversation does not start with the user")
    messages[0]["content"] = first_prompt  # the drawn prompt, exactly (models paraphrase it)
    check_conversation(messages, where="reply")
    return messages


def generate_identity_conversations(num: int, output: str | os.PathLike, *, base_url: str, api_key: str | None,
                                    model: str, identity: str = DEFAULT_IDENTITY, seed: int = 0,
                                    workers: int = 4, retries: int = 2, timeout: float = 60.0) -> int:
    """Write `num` conversations (fewer if some fail every retry) to `output`; returns how many."""
    rng = random.Random(seed)
    jobs = [(rng.choice(FIRST_PROMPTS), rng.choice((1, 1, 2, 2, 3))) for _ in range(num)]

    def one(job):
        prompt, turns = job
        request = [{"role": "user", "content": _INSTRUCTIONS.format(identity=identity, prompt=prompt, turns=turns)}]
        for attempt in range(retries + 1):
            try:
                return parse_conversation(chat_completion(base_url, api_key, model, request, timeout=timeout), prompt)
            except (ValueError, RuntimeError, OSError) as err:
                logger.warning("conversation for %r, attempt %d: %s", prompt, attempt + 1, err)
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        conversations = [c for c in pool.map(one, jobs) if c is not None]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for messages in conversations:
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    return len(conversations)
