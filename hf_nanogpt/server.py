"""OpenAI-compatible chat server and the chat web page (FastAPI).

`create_app(model, tokenizer, ...)` builds the app; `scripts/chat_web.py` loads a model folder and
runs it under uvicorn (bound to 127.0.0.1 unless asked otherwise).

Routes:
- `POST /v1/chat/completions`: OpenAI's request and response shape (`messages`, `max_tokens` /
  `max_completion_tokens`, `temperature`, `top_p`, `n`, `seed`, `stream`, `stream_options`, plus
  `top_k`); `stream: true` answers with server-sent events: `data: {chat.completion.chunk}` lines,
  then `data: [DONE]`.
- `GET /v1/models`, `GET /health` (workers busy / requests queued), `GET /` (the chat page, files in
  `hf_nanogpt/static/`).

Bad input is answered 4xx with an OpenAI-style error body naming the problem, never a 500: invalid
JSON (400), a field of the wrong type or range (400), an unknown role or out-of-order roles (400),
empty `messages` (400), `max_tokens` above the server limit (400), a prompt that does not fit the
context (400), a wrong or missing API key (401), an unknown model name (404), a full queue (503).

Concurrency is a worker queue, not cross-request batching: `workers` requests generate at once
(each in its own thread over the one shared model; the engine batches the `n` samples of a request),
later requests wait in FIFO order, and more than `max_queue` waiting are refused with 503. A client
that disconnects (mid-stream or while queued) cancels its generation at the next token and frees its
worker slot.

Tool calls appear in the reply text as the model wrote them:
`<|python_start|>expr<|python_end|><|output_start|>result<|output_end|>`; an assistant message sent
back in that form is turned into the matching python/output parts, so tool-use history round-trips.
"""

import asyncio
import json
import logging
import threading
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .engine import ChatTokens, Engine, TextStream, assistant_parts
from .tokenization import render_for_completion

logger = logging.getLogger(__name__)

class ApiError(Exception):
    """An error answered to the client: HTTP status, message, and the OpenAI error type / param."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}
        return JSONResponse(body, status_code=self.status)


# ----------------------------------------------------------------------------- request schema


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatMessage(BaseModel):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat-completions fields this server honours; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None


def _validation_message(err: ValidationError) -> tuple[str, str | None]:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']} (got {first.get('input')!r:.60})", where


def _to_conversation(request: ChatCompletionRequest) -> list[dict]:
    """OpenAI messages -> the tokenizer's message schema; checks roles and content."""
    if not request.messages:
        raise ApiError(400, "messages is empty: send at least one user message", "messages")
    messages = []
    for i, m in enumerate(request.messages):
        if m.role not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role: unknown role {m.role!r} (expected system, user or assistant)",
                           f"messages[{i}].role")
        content = m.content
        if content is None:
            raise ApiError(400, f"messages[{i}].content is missing", f"messages[{i}].content")
        if isinstance(content, list):  # OpenAI content parts: only text parts carry meaning here
            kinds = {p.get("type") for p in content}
            if m.role == "assistant" and kinds <= {"text", "python", "output"}:
                messages.append({"role": m.role, "content": content})
                continue
            if kinds - {"text"}:
                raise ApiError(400, f"messages[{i}].content: only text parts are supported, "
                               f"got {sorted(map(str, kinds))}", f"messages[{i}].content")
            content = "".join(str(p.get("text", "")) for p in content)
        if m.role == "assistant":
            content = assistant_parts(content)
        messages.append({"role": m.role, "content": content})
    if messages[-1]["role"] != "user":
        raise ApiError(400, f"the last message must come from the user, got {messages[-1]['role']}",
                       f"messages[{len(messages) - 1}].role")
    return messages


# ----------------------------------------------------------------------------- workers


class WorkerPool:
    """At most `workers` generations run at once; the rest wait in FIFO order (asyncio.Semaphore is
    fair), at most `max_queue` of them. A slot is freed when the generation thread has stopped."""

    def __init__(self, workers: int, max_queue: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self.max_queue = workers, max_queue
        self.busy = self.queued = self.served = 0
        self._slots: asyncio.Semaphore | None = None  # created inside the server's event loop

    def stats(self) -> dict:
        return {"workers": self.workers, "busy": self.busy, "queued": self.queued, "served": self.served}

    def full(self) -> bool:
        """True when a new request would find no free slot and no room in the queue."""
        return self.busy >= self.workers and self.queued >= self.max_queue

    def _abandon(self, acquire: asyncio.Future) -> None:
        """Give up a pending or finished slot acquisition without leaking the slot."""
        if acquire.done():
            if not acquire.cancelled() and acquire.exception() is None:
                self._slots.release()
        else:  # Semaphore.acquire passes a wake-up it received on to the next waiter when cancelled
            acquire.cancel()

    async def stream(self, generate, wait_for_disconnect):
        """Run the blocking iterator factory `generate()` in a worker thread; yield its items here.

        `wait_for_disconnect()` returns an awaitable that completes when the client goes away: the
        generation is then cancelled at its next step (or never starts, if it was still queued), and
        the slot returns to the pool once the thread has stopped.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        if self.full():
            raise ApiError(503, f"server busy: {self.queued} requests already queued", kind="server_busy")
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        watcher = asyncio.ensure_future(wait_for_disconnect())
        watcher.add_done_callback(lambda _: (cancel.set(), items.put_nowait(("cancelled", None))))
        acquire = asyncio.ensure_future(self._slots.acquire())
        self.queued += 1
        try:
            await asyncio.wait([acquire, watcher], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request was cancelled while queued
            self._abandon(acquire)
            watcher.cancel()
            raise
        finally:
            self.queued -= 1
        if not acquire.done() or cancel.is_set():  # the client left while queued
            self._abandon(acquire)
            watcher.cancel()
            return
        self.busy += 1

        def release() -> None:
            self.busy -= 1
            self.served += 1
            self._slots.release()

        def post(kind, value) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        def work() -> None:
            try:
                iterator = generate()
                for item in iterator:
                    if cancel.is_set():
                        iterator.close()
                        break
                    post("item", item)
            except Exception as err:  # reported to the client; the worker survives
                post("error", err)
            finally:
                post("done", None)
                try:
                    loop.call_soon_threadsafe(release)
                except RuntimeError:
                    pass

        threading.Thread(target=work, name="hf_nanogpt-generate", daemon=True).start()
        try:
            while True:
                kind, value = await items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise value
                else:  # done or cancelled
                    return
        finally:
            cancel.set()
            watcher.cancel()


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so only that message remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ----------------------------------------------------------------------------- the app


def create_app(
    model,
    tokenizer,
    *,
    model_name: str = "hf_nanogpt",
    api_key: str | None = None,
    workers: int = 1,
    max_queue: int = 64,
    max_tokens_limit: int = 1024,
    default_max_tokens: int = 512,
    max_n: int = 8,
    temperature: float = 0.8,
    top_k: int | None = 50,
) -> FastAPI:
    """The chat API + web page for `model` (a causal LM, eval mode) and its chat `tokenizer`.

    `api_key`: when set, `/v1/*` requires `Authorization: Bearer <api_key>`. `max_tokens_limit` caps
    a request's `max_tokens`; `temperature` and `top_k` are the defaults for requests that omit them.
    """
    tokens = ChatTokens.from_tokenizer(tokenizer)
    engine = Engine.from_tokenizer(model, tokenizer)
    context = engine.max_context
    pool = WorkerPool(workers, max_queue)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    app = FastAPI(title="hf_nanogpt chat", version="1", docs_url="/docs", redoc_url=None)
    app.state.pool, app.state.engine = pool, engine

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):  # a bug or a model failure, not bad input
        logger.exception("request failed")
        return ApiError(500, f"internal error: {type(err).__name__}: {err}", kind="server_error").response()

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        if header != f"Bearer {api_key}":
            raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           kind="authentication_error")

    async def parse(request: Request) -> tuple[ChatCompletionRequest, list[int], int]:
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
        try:
            req = ChatCompletionRequest.model_validate(data)
        except ValidationError as err:
            raise ApiError(400, *_validation_message(err)) from None
        if req.model not in (None, model_name):
            raise ApiError(404, f"model {req.model!r} is not served here (available: {model_name!r})",
                           "model", kind="model_not_found")
        if req.stop is not None and req.stop != []:
            raise ApiError(400, "stop sequences are not supported: replies end at <|assistant_end|>", "stop")
        if req.n > max_n:
            raise ApiError(400, f"n={req.n} exceeds the server limit of {max_n}", "n")
        max_tokens = req.max_completion_tokens or req.max_tokens or min(default_max_tokens, max_tokens_limit)
        if max_tokens > max_tokens_limit:
            field = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise ApiError(400, f"{field}={max_tokens} exceeds the server limit of {max_tokens_limit}", field)
        try:
            prompt = render_for_completion(tokenizer, _to_conversation(req))
        except ValueError as err:  # the renderer names the message at fault
            raise ApiError(400, f"messages: {err}", "messages") from None
        if context is not None and len(prompt) >= context:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens; the model's context is {context} tokens "
                           "(shorten the conversation)", "messages")
        return req, prompt, max_tokens

    def generation(req: ChatCompletionRequest, prompt: list[int], max_tokens: int):
        kwargs = dict(num_samples=req.n, max_tokens=max_tokens, seed=req.seed,
                      temperature=temperature if req.temperature is None else req.temperature,
                      top_k=top_k if req.top_k is None else req.top_k, top_p=req.top_p)
        return lambda: engine.generate(prompt, **kwargs)

    async def completion_events(request: Request, req, prompt, max_tokens):
        """Yield (choice index, text delta, finish_reason or None) and finally ("usage", n, None)."""
        streams = [TextStream(decode) for _ in range(req.n)]
        finished = [False] * req.n
        count = 0
        run = generation(req, prompt, max_tokens)
        async for column, _ in pool.stream(run, lambda: _wait_for_disconnect(request)):
            for r, token in enumerate(column):
                if token is None or finished[r]:
                    continue
                count += 1
                if token in tokens.stop_ids:
                    finished[r] = True
                    if tail := streams[r].flush():
                        yield r, tail, None
                    yield r, "", "stop"
                elif text := streams[r].push(token):
                    yield r, text, None
        for r in range(req.n):  # rows cut by the token budget or the context
            if not finished[r]:
                if tail := streams[r].flush():
                    yield r, tail, None
                yield r, "", "length"
        yield "usage", count, None

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request)
        req, prompt, max_tokens = await parse(request)
        if pool.full():  # refuse before a stream starts, while a status code can say so
            raise ApiError(503, f"server busy: {pool.queued} requests already queued", kind="server_busy")
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        events = completion_events(request, req, prompt, max_tokens)
        if not req.stream:
            texts, reasons, count = [""] * req.n, [None] * req.n, 0
            async for index, text, reason in events:
                if index == "usage":
                    count = text
                else:
                    texts[index] += text
                    reasons[index] = reason or reasons[index]
            choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                        "logprobs": None, "finish_reason": reasons[i]} for i in range(req.n)]
            return {**head, "object": "chat.completion", "choices": choices, "usage": usage(len(prompt), count)}

        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(choices: list, **extra) -> str:
            body = {**head, "object": "chat.completion.chunk", "choices": choices, **extra}
            return f"data: {json.dumps(body)}\n\n"

        async def sse():
            for i in range(req.n):  # the role comes first, as OpenAI sends it
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            try:
                async for index, text, reason in events:
                    if index == "usage":
                        if include_usage:
                            yield chunk([], usage=usage(len(prompt), text))
                        continue
                    delta = {"content": text} if text else {}
                    yield chunk([{"index": index, "delta": delta, "finish_reason": reason}])
            except Exception as err:  # the headers are out: report in-band, then end the stream
                if isinstance(err, ApiError):
                    error = {"message": err.message, "type": err.kind}
                else:
                    logger.exception("generation failed mid-stream")
                    error = {"message": f"internal error: {type(err).__name__}: {err}", "type": "server_error"}
                yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "hf_nanogpt",
                "context_length": context, "max_tokens_limit": max_tokens_limit}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "auth": api_key is not None, **pool.stats()}

    static = resources.files("hf_nanogpt").joinpath("static")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(static.joinpath("index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


__all__ = ["ApiError", "ChatCompletionRequest", "WorkerPool", "create_app"]
