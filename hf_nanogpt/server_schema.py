"""Requests and replies of the chat server: strict schemas, conversation checks, readable reply text.

Requests are parsed strictly: a field of the wrong JSON type is refused (`"5"` or `true` is not an
integer, `"yes"` is not a boolean), numbers must be finite JSON numbers, strings must be valid
Unicode (no lone surrogates), and every error names the field. Unknown fields of
`/v1/chat/completions` are ignored (OpenAI clients send many); `/generate` refuses them by name.

Replies come in two forms. The model writes calculator calls with control tokens
(`<|python_start|>12 * 34<|python_end|><|output_start|>408<|output_end|>#### 408`); `content` gets
the readable form the chat page shows (`calc: 12 * 34 = 408` then `#### 408` on its own line), and
the extension field `raw_content` keeps the control-token text, which round-trips: an assistant
message sent back with `raw_content` (or with that text as `content`) becomes the same tool parts.
"""

import json
import math
import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .engine import ChatTokens, TextStream, assistant_parts
from .server_guard import ApiError
from .tokenization import SPECIAL_TOKENS

INT64 = 2**63  # seeds are 64-bit signed integers (torch.Generator.manual_seed)


def _unicode(value: str) -> str:
    """Refuse lone surrogates (`"\\ud800"` is valid JSON but not text a tokenizer can encode)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode text ({err.reason} at character {err.start})") from None
    return value


Text = Annotated[str, AfterValidator(_unicode)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class ContentPart(_Strict):
    """An OpenAI content part; only text (and, in assistant turns, python / output) parts carry meaning."""

    type: Text
    text: Text | None = None


class ChatMessage(_Strict):
    role: Text
    content: Text | list[ContentPart] | None = None
    raw_content: Text | None = None  # our extension: an assistant reply as the model wrote it


class ChatCompletionRequest(_Strict):
    """The OpenAI chat-completions fields this server honours; other fields are accepted and ignored."""

    model: Text | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, ge=-INT64, lt=INT64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None


class GenerateRequest(BaseModel):
    """`POST /generate` (nanoGPT's simple API): continue `prompt` as plain text."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: Text = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes):
    """Body bytes -> a JSON object (dict), or ApiError 400 naming the problem. UTF-8/16/32 bodies are
    accepted (RFC 8259 asks for UTF-8; json detects the others); NaN/Infinity, integers of more than
    4300 digits and nesting deeper than Python's recursion limit are refused."""
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, NaN, huge integers
        raise ApiError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def validate(model: type[BaseModel], data: dict):
    """`model.model_validate(data)`, or ApiError 400 naming the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        shown = repr(first.get("input"))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ApiError(400, f"{where}: {first['msg']} (got {shown})", where) from None


def to_conversation(request: ChatCompletionRequest) -> list[dict]:
    """OpenAI messages -> the tokenizer's message schema; checks roles and content."""
    if not request.messages:
        raise ApiError(400, "messages is empty: send at least one user message", "messages")
    messages = []
    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if m.role not in ("system", "user", "assistant"):
            raise ApiError(400, f"{where}.role: unknown role {m.role!r} (expected system, user or assistant)",
                           f"{where}.role")
        content = m.content
        if m.role == "assistant" and m.raw_content is not None:
            content = m.raw_content
        if content is None:
            raise ApiError(400, f"{where}.content is missing", f"{where}.content")
        if isinstance(content, list):  # OpenAI content parts
            kinds = sorted({p.type for p in content})
            if any(p.text is None for p in content):
                raise ApiError(400, f"{where}.content: every part needs a text", f"{where}.content")
            if m.role == "assistant" and set(kinds) <= {"text", "python", "output"}:
                messages.append({"role": m.role, "content": [{"type": p.type, "text": p.text} for p in content]})
                continue
            if set(kinds) - {"text"}:
                raise ApiError(400, f"{where}.content: only text parts are supported, got {kinds}",
                               f"{where}.content")
            content = "".join(p.text for p in content)
        if m.role == "assistant":
            content = assistant_parts(content)
        messages.append({"role": m.role, "content": content})
    if messages[-1]["role"] != "user":
        raise ApiError(400, f"the last message must come from the user, got {messages[-1]['role']}",
                       f"messages[{len(messages) - 1}].role")
    return messages


def min_prompt_tokens(messages: list[dict], max_token_bytes: int) -> int:
    """A lower bound on the rendered prompt's length, computed without tokenizing: every token holds at
    most `max_token_bytes` bytes, and each user / assistant turn and tool block adds two control
    tokens (system text is merged into the first user turn). A prompt whose bound already exceeds the
    context is refused before the tokenizer spends time on it.

    The text's bytes are divided once, over the whole prompt: adjacent parts render as one string (two
    text parts "0" and "0" are the single token "00"), so a ceiling per part could exceed the real count."""
    control, text_bytes = 2, 0  # <|bos|> ... <|assistant_start|>
    for m in messages:
        content = m["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        control += 0 if m["role"] == "system" else 2
        for p in parts:
            control += 2 if p["type"] != "text" else 0
            text_bytes += len(p["text"].encode("utf-8"))
    return control + math.ceil(text_bytes / max_token_bytes)


def context_error(prompt_tokens: int, context: int, at_least: bool = False, param: str = "messages") -> ApiError:
    """400 for a prompt the context cannot hold (code `context_length_exceeded`, as OpenAI's)."""
    size = f"at least {prompt_tokens}" if at_least else f"{prompt_tokens}"
    return ApiError(400, f"the prompt is {size} tokens; the model's context is {context} tokens "
                    "(shorten the conversation or start a new chat)", param, code="context_length_exceeded")


# ----------------------------------------------------------------------------- replies

# How the chat page shows tool blocks, and so the readable `content`: "calc: <expr>" and " = <result>".
TOOL_CALL_PREFIX, TOOL_OUTPUT_PREFIX = "calc: ", " = "
_MARKERS = {"<|python_start|>": "call", "<|output_start|>": "output", "<|python_end|>": "end", "<|output_end|>": "end"}
_MARKER_SPLIT = re.compile("(" + "|".join(re.escape(m) for m in _MARKERS) + ")")
_OTHER_CONTROL = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS if t not in _MARKERS))


class _Readable:
    """The readable-text rules, fed tool markers and text pieces in order (streamed or not)."""

    def __init__(self):
        self.last = ""  # the last character emitted ("" at the start)
        self.after_tool = False  # a tool block just closed: the next text starts on a new line

    def marker(self, kind: str) -> str:
        if kind == "end":
            self.after_tool = True
            return ""
        sep = "\n" if kind == "call" and self.last and not self.last.isspace() else ""
        self.after_tool, self.last = False, " "
        return sep + (TOOL_CALL_PREFIX if kind == "call" else TOOL_OUTPUT_PREFIX)

    def text(self, piece: str) -> str:
        if not piece:
            return ""
        if self.after_tool and not piece[0].isspace():
            piece = "\n" + piece
        self.after_tool, self.last = False, piece[-1]
        return piece


def readable_text(raw: str) -> str:
    """Control-token reply text -> what a person reads: `calc: 12 * 34 = 408` then `#### 408` on the next
    line; an unclosed tool block reads as far as it goes; other control tokens are dropped."""
    rules = _Readable()
    return "".join(rules.marker(_MARKERS[piece]) if piece in _MARKERS else rules.text(_OTHER_CONTROL.sub("", piece))
                   for piece in _MARKER_SPLIT.split(raw))


def reply_segments(raw: str) -> list[dict]:
    """The `segments` extension field: the reply as `[{"type": "text"|"python"|"output", "text"}]`."""
    parts = assistant_parts(raw)
    return [{"type": "text", "text": parts}] if isinstance(parts, str) else parts


class ReplyText:
    """One reply's token ids -> (readable delta, raw delta), streamed: joining the raw deltas gives the
    control-token text, joining the readable ones gives `readable_text` of it."""

    def __init__(self, decode_raw: Callable[[list[int]], str], decode_text: Callable[[list[int]], str],
                 tokens: ChatTokens):
        # decode_text skips control tokens; the tool markers are handled here by id
        self.raw, self.text = TextStream(decode_raw), TextStream(decode_text)
        ids = {"call": tokens.python_start, "output": tokens.output_start, "end": None}
        self.markers = {i: kind for kind, i in ids.items() if i is not None}
        self.markers.update({i: "end" for i in (tokens.python_end, tokens.output_end) if i is not None})
        self.rules = _Readable()

    def push(self, token: int) -> tuple[str, str]:
        raw = self.raw.push(token)
        kind = self.markers.get(token)
        if kind is None:
            return self.rules.text(self.text.push(token)), raw
        return self.rules.text(self.text.flush()) + self.rules.marker(kind), raw

    def flush(self) -> tuple[str, str]:
        return self.rules.text(self.text.flush()), self.raw.flush()


__all__ = ["ChatCompletionRequest", "GenerateRequest", "ReplyText", "context_error", "min_prompt_tokens",
           "parse_json", "readable_text", "reply_segments", "to_conversation", "validate"]
