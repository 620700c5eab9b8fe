"""OpenAI-compatible chat server, nanoGPT's `POST /generate`, and the chat web page (FastAPI).

`create_app(model, tokenizer, ...)` builds the app; `scripts/chat_web.py` loads a model folder and
runs it under uvicorn (bound to 127.0.0.1 unless asked otherwise).

Routes:
- `POST /v1/chat/completions`: OpenAI's request and response shape (`messages`, `max_tokens` /
  `max_completion_tokens`, `temperature`, `top_p`, `n`, `seed`, `stream`, `stream_options`, plus
  `top_k`); `stream: true` answers with server-sent events: `data: {chat.completion.chunk}` lines,
  then `data: [DONE]`. `content` is readable text (a calculator call reads `calc: 12 * 34 = 408`);
  the extension fields `raw_content` (the reply with its control tokens, also in stream deltas) and
  `segments` (`[{"type": "text"|"python"|"output", "text"}]`) keep what the model wrote.
- `POST /generate`: `{"prompt", "max_tokens", "temperature"}` -> `{"generated_text", "prompt"}`, a
  plain-text continuation of `prompt` (after `<|bos|>`), with the same limits and errors.
- `GET /v1/models`, `GET /health` (workers busy / requests queued), `GET /` (the chat page, files in
  `hf_nanogpt/static/`), `GET /docs` and `/openapi.json` (Swagger UI from local files, never a CDN;
  behind the key when one is set; `docs=False` turns them off).

Nothing a client sends is answered with a 5xx (a property-based fuzz test holds the server to it):
a host name not served (400), a body over `max_body_bytes` (413, before it is read or parsed), a POST
that is not `application/json` (415), invalid JSON or a field of the wrong type or range (400; types
are strict: `"5"` is not an integer), an unknown role or out-of-order roles (400), `max_tokens`
above the server limit (400), a prompt that does not fit the context (400, code
`context_length_exceeded`), a wrong or missing API key (401), an unknown model name (404), a full
queue (503). Only a failure of the model itself is a 500 (in-band in a stream already started).

Parsing, validation and tokenization run in a thread, off the event loop, and a prompt that cannot
fit the context is refused from its byte count before it is tokenized, so `/health` stays
responsive while the largest allowed request is processed (`python scripts/bench.py server`).

Browser safety: the `Host` header must name this server (`allowed_hosts`; the loopback names by
default), so a web page whose domain was rebound to 127.0.0.1 gets 400; no CORS headers are sent
unless `cors_origins` lists origins, and JSON-only POSTs mean a page on another origin cannot send
a request without a preflight this server does not grant.

Concurrency is a worker queue, not cross-request batching: `workers` requests generate at once
(each in its own thread over the one shared model; the engine batches the `n` samples of a request),
later requests wait in FIFO order, and beyond `workers + max_queue` admitted requests the rest get
503 (`hf_nanogpt/server_pool.py`). A client that disconnects (mid-stream or while queued) cancels its
generation at the next token and frees its worker slot.
"""

import json
import logging
import math
import time
import uuid
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .engine import ChatTokens, Engine
from .server_guard import LOOPBACK_HOSTS, ApiError, BodyLimit, check_bearer, require_json
from .server_pool import Ticket, WorkerPool
from .server_schema import (ChatCompletionRequest, GenerateRequest, ReplyText, context_error, min_prompt_tokens,
                            parse_json, reply_segments, to_conversation, validate)
from .tokenization import get_encoder, render_for_completion, token_bytes

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # a chat request of 4 MB is far past any context this serves


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so only that message remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _TicketStream(StreamingResponse):
    """A streamed reply that gives its pool ticket back if the generation never started (the
    client left before the stream began, or the response was never sent)."""

    def __init__(self, content, ticket: Ticket, **kwargs):
        super().__init__(content, **kwargs)
        self.ticket = ticket

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.release_if_idle()


def _docs_assets():
    """Swagger UI's files from the `fastapi-offline` package (served locally), or None without it."""
    try:
        return resources.files("fastapi_offline").joinpath("static")
    except ModuleNotFoundError:
        return None


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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    allowed_hosts: list[str] | None = None,
    cors_origins: list[str] | None = None,
    docs: bool = True,
) -> FastAPI:
    """The chat API + web page for `model` (a causal LM, eval mode) and its chat `tokenizer`.

    `api_key`: when set, `/v1/*`, `/generate`, `/docs` and `/openapi.json` require
    `Authorization: Bearer <api_key>`. `max_tokens_limit` caps a request's `max_tokens`;
    `temperature` and `top_k` are the defaults for requests that omit them. `allowed_hosts`: the
    `Host` names accepted (default: 127.0.0.1, localhost, [::1]; `["*"]` accepts any).
    `cors_origins`: origins allowed to call the API from a browser (default: none).
    """
    tokens = ChatTokens.from_tokenizer(tokenizer)
    engine = Engine.from_tokenizer(model, tokenizer)
    context = engine.max_context
    pool = WorkerPool(workers, max_queue)
    encode_text = get_encoder(tokenizer, "hf")  # control-token strings in the prompt stay text
    max_token_bytes = max(1, int(token_bytes(tokenizer).max()))
    decode_raw = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    decode_text = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    app = FastAPI(title="hf_nanogpt chat", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool, app.state.engine = pool, engine
    # outermost first: Host check, then CORS (answers preflights), then the body limit
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):  # a bug or a model failure, not bad input
        logger.exception("request failed")
        return ApiError(500, f"internal error: {type(err).__name__}: {err}", kind="server_error").response()

    async def read_body(request: Request) -> bytes:
        check_bearer(request.headers, api_key)  # before reading anything an unauthenticated client sent
        require_json(request.headers)
        return await request.body()

    def max_tokens_of(asked: int | None, field: str = "max_tokens") -> int:
        if asked is None:
            return min(default_max_tokens, max_tokens_limit)
        if asked > max_tokens_limit:
            raise ApiError(400, f"{field}={asked} exceeds the server limit of {max_tokens_limit}", field)
        return asked

    def fits(prompt: list[int], param: str) -> None:
        if context is not None and len(prompt) >= context:
            raise context_error(len(prompt), context, param=param)

    def prepare_chat(raw: bytes) -> tuple[ChatCompletionRequest, list[int], int]:
        """Body -> (request, prompt ids, max_tokens); runs in a worker thread."""
        req = validate(ChatCompletionRequest, parse_json(raw))
        if req.model not in (None, model_name):
            raise ApiError(404, f"model {req.model!r} is not served here (available: {model_name!r})",
                           "model", kind="model_not_found", code="model_not_found")
        if req.stop is not None and req.stop != []:
            raise ApiError(400, "stop sequences are not supported: replies end at <|assistant_end|>", "stop")
        if req.n > max_n:
            raise ApiError(400, f"n={req.n} exceeds the server limit of {max_n}", "n")
        if req.max_completion_tokens is not None:
            max_tokens = max_tokens_of(req.max_completion_tokens, "max_completion_tokens")
        else:
            max_tokens = max_tokens_of(req.max_tokens)
        messages = to_conversation(req)
        if context is not None and (bound := min_prompt_tokens(messages, max_token_bytes)) >= context:
            raise context_error(bound, context, at_least=True)
        try:
            prompt = render_for_completion(tokenizer, messages)
        except ValueError as err:  # the renderer names the message at fault
            raise ApiError(400, f"messages: {err}", "messages") from None
        fits(prompt, "messages")
        return req, prompt, max_tokens

    def prepare_generate(raw: bytes) -> tuple[GenerateRequest, list[int], int]:
        req = validate(GenerateRequest, parse_json(raw))
        max_tokens = max_tokens_of(req.max_tokens)
        bound = 1 + math.ceil(len(req.prompt.encode("utf-8")) / max_token_bytes)  # <|bos|> + text
        if context is not None and bound >= context:
            raise context_error(bound, context, at_least=True, param="prompt")
        prompt = ([tokens.bos] if tokens.bos is not None else []) + encode_text([req.prompt])[0]
        fits(prompt, "prompt")
        return req, prompt, max_tokens

    def sampling(req, max_tokens: int, n: int = 1) -> dict:
        return dict(num_samples=n, max_tokens=max_tokens, seed=getattr(req, "seed", None),
                    temperature=temperature if req.temperature is None else req.temperature,
                    top_k=top_k if getattr(req, "top_k", None) is None else req.top_k,
                    top_p=getattr(req, "top_p", None))

    async def token_rows(request: Request, ticket: Ticket, prompt: list[int], kwargs: dict):
        """Yield (row, token id) as the engine produces them (stop tokens included)."""
        run = lambda: engine.generate(prompt, **kwargs)  # noqa: E731
        async for column, _ in pool.stream(ticket, run, lambda: _wait_for_disconnect(request)):
            for r, token in enumerate(column):
                if token is not None:
                    yield r, token

    async def completion_events(request: Request, ticket: Ticket, req, prompt, max_tokens):
        """Yield (choice index, readable delta, raw delta, finish_reason or None), finally ("usage", n, ...)."""
        texts = [ReplyText(decode_raw, decode_text, tokens) for _ in range(req.n)]
        finished = [False] * req.n
        count = 0
        async for r, token in token_rows(request, ticket, prompt, sampling(req, max_tokens, req.n)):
            if finished[r]:
                continue
            count += 1
            if token in tokens.stop_ids:
                finished[r] = True
                readable, raw = texts[r].flush()
                yield r, readable, raw, "stop"
            else:
                readable, raw = texts[r].push(token)
                if readable or raw:
                    yield r, readable, raw, None
        for r in range(req.n):  # rows cut by the token budget or the context
            if not finished[r]:
                readable, raw = texts[r].flush()
                yield r, readable, raw, "length"
        yield "usage", count, None, None

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req, prompt, max_tokens = await run_in_threadpool(prepare_chat, await read_body(request))
        ticket = pool.admit()  # no await since the check: a burst cannot overfill the queue
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        events = completion_events(request, ticket, req, prompt, max_tokens)
        if not req.stream:
            texts, raws, reasons, count = [""] * req.n, [""] * req.n, [None] * req.n, 0
            try:
                async for index, readable, raw, reason in events:
                    if index == "usage":
                        count = readable
                    else:
                        texts[index] += readable
                        raws[index] += raw
                        reasons[index] = reason or reasons[index]
            finally:
                ticket.release_if_idle()
            choices = [{"index": i, "message": {"role": "assistant", "content": texts[i], "raw_content": raws[i],
                                                "segments": reply_segments(raws[i])},
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
                async for index, readable, raw, reason in events:
                    if index == "usage":
                        if include_usage:
                            yield chunk([], usage=usage(len(prompt), readable))
                        continue
                    delta = {k: v for k, v in (("content", readable), ("raw_content", raw)) if v}
                    yield chunk([{"index": index, "delta": delta, "finish_reason": reason}])
            except Exception as err:  # the headers are out: report in-band, then end the stream
                logger.exception("generation failed mid-stream")
                error = {"message": f"internal error: {type(err).__name__}: {err}", "type": "server_error"}
                yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"

        return _TicketStream(sse(), ticket, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/generate")
    async def generate(request: Request):
        req, prompt, max_tokens = await run_in_threadpool(prepare_generate, await read_body(request))
        ticket = pool.admit()
        generated = []
        try:
            async for _, token in token_rows(request, ticket, prompt, sampling(req, max_tokens)):
                if token in tokens.stop_ids:
                    break
                generated.append(token)
        finally:
            ticket.release_if_idle()
        return {"generated_text": decode_raw(generated), "prompt": req.prompt}

    @app.get("/v1/models")
    async def models(request: Request):
        check_bearer(request.headers, api_key)
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
    assets = _docs_assets() if docs else None
    if docs and assets is None:
        logger.warning("API docs are off: the fastapi-offline package (Swagger UI without a CDN) is not installed")
    if assets is not None:
        _add_docs(app, assets, api_key)
    return app


def _add_docs(app: FastAPI, assets, api_key: str | None) -> None:
    """`/docs` (Swagger UI, local files) and `/openapi.json`, with the request schemas of the POST
    routes (which read their bodies themselves), both behind the API key when one is set."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for path, model in (("/v1/chat/completions", ChatCompletionRequest), ("/generate", GenerateRequest)):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
                spec["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
            app.openapi_schema = spec
        return app.openapi_schema

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        check_bearer(request.headers, api_key)
        return JSONResponse(schema())

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request):
        check_bearer(request.headers, api_key)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url="/static-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-docs/swagger-ui.css",
                                   swagger_favicon_url="/static-docs/favicon.png")

    app.mount("/static-docs", StaticFiles(directory=str(assets)), name="static-docs")


__all__ = ["ApiError", "ChatCompletionRequest", "DEFAULT_MAX_BODY_BYTES", "GenerateRequest", "WorkerPool",
           "create_app"]
