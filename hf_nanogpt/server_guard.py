"""What stands between a client and the chat server's routes: errors, size limits, origin checks, the key.

- `ApiError`: an error answered with an OpenAI-style JSON body (`{"error": {message, type, param, code}}`).
- `BodyLimit`: an ASGI middleware that refuses a request body over `max_bytes` with 413, from the
  `Content-Length` header before any byte is read, or as soon as a chunked body passes the limit
  (nothing is parsed either way).
- `host_middleware_hosts`: the `Host` names a server bound to an address accepts (starlette's
  `TrustedHostMiddleware` enforces them), so a page on another site whose name was rebound to
  127.0.0.1 (DNS rebinding) is refused.
- `require_json`: API requests must say `Content-Type: application/json`. A browser sends such a
  request to another origin only after a CORS preflight, which this server does not grant unless
  `cors_origins` is configured; `text/plain` "simple" requests from any web page are refused.
- `check_bearer`: `Authorization: Bearer <key>` (the scheme in any case, RFC 7235), compared in
  constant time.
"""

import secrets

from fastapi.responses import JSONResponse

# Host names that mean "this machine" for a server bound to a loopback address.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1", "[::1]")
ANY_BINDS = ("0.0.0.0", "::", "[::]", "")


class ApiError(Exception):
    """An error answered to the client: HTTP status, message, and the OpenAI error type / param / code."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body exceeds the server limit of {limit} bytes", kind="request_too_large")


class BodyLimit:
    """ASGI middleware: at most `max_bytes` of request body per request, else 413 before parsing."""

    def __init__(self, app, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = [v for k, v in scope["headers"] if k == b"content-length"]
        if declared:  # the server (h11 / httptools) has already refused a malformed value
            if int(declared[0]) > self.max_bytes:
                return await too_large(self.max_bytes).response()(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body without Content-Length
                    raise too_large(self.max_bytes)  # answered by the app's ApiError handler
            return message

        return await self.app(scope, limited, send)


def host_middleware_hosts(bind: str, allowed_hosts: list[str] | None) -> list[str]:
    """The Host names to accept: `allowed_hosts` when given ("*" accepts any), else those of `bind`:
    the loopback names for a loopback bind, any host for a wildcard bind (0.0.0.0, ::), the bind
    address itself otherwise."""
    if allowed_hosts:
        return [h.lower() for h in allowed_hosts]
    if bind in LOOPBACK_BINDS:
        return list(LOOPBACK_HOSTS)
    if bind in ANY_BINDS:
        return ["*"]
    return [f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind.lower()]


def require_json(headers) -> None:
    """Refuse a POST whose Content-Type is not JSON (415), naming what was sent."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {media or 'none'!r}",
                       kind="unsupported_media_type")


def check_bearer(headers, api_key: str | None) -> None:
    """Refuse (401) a request without `Authorization: Bearer <api_key>` when a key is set."""
    if api_key is None:
        return
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    # compare_digest takes the time of the longer input whatever the contents; the header arrives
    # latin-1 decoded (ASGI), so its bytes are recovered exactly with latin-1
    ok = scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode("latin-1", "replace"),
                                                               api_key.encode("utf-8"))
    if not ok:
        raise ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                       kind="authentication_error", code="invalid_api_key")


__all__ = ["ApiError", "BodyLimit", "check_bearer", "host_middleware_hosts", "require_json", "too_large"]
