"""`RequestGuard`: the server's outer ASGI layer (HTTP process): API key, concurrency cap, time limits.

* API key: when set, every request but the health probes must carry it (`X-API-Key: KEY` or
  `Authorization: Bearer KEY`), compared in constant time; otherwise 401.
* Concurrency cap: at most `max_concurrent` inference requests in flight per HTTP process; one more gets
  503 with `Retry-After`, at once, instead of queueing without bound.
* Time limits: a body not received within `body_timeout` seconds gets 408 (slow clients cannot hold a slot);
  a request not answered within `timeout` seconds gets 504.

Errors on V2 paths use the protocol's `{"error": ...}`, the others FastAPI's `{"detail": ...}`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = ("/health", "/v2/health/live", "/v2/health/ready")


class BodyTimeout(Exception):
    """The client did not send the whole body in time."""


def error(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    key = "error" if path.startswith("/v2") else "detail"
    return JSONResponse({key: message}, status_code=status, headers=headers)


def given_key(scope: Scope) -> str:
    headers = dict(scope.get("headers", []))
    key = headers.get(b"x-api-key")
    if key is None:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return key.decode("latin-1")


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None = None,
        max_concurrent: int = 64,
        retry_after: int = 1,
        timeout: float = 30.0,
        body_timeout: float = 10.0,
        limited_prefixes: Sequence[str] = ("/predict", "/v2/models/"),
        open_paths: Sequence[str] = OPEN_PATHS,
    ) -> None:
        self.app, self.api_key = app, api_key.encode() if api_key else None
        self.max_concurrent, self.retry_after = max_concurrent, retry_after
        self.timeout, self.body_timeout = timeout, body_timeout
        self.limited_prefixes, self.open_paths = tuple(limited_prefixes), tuple(open_paths)
        self.active = 0

    def _authorised(self, scope: Scope) -> bool:
        if self.api_key is None or scope["path"] in self.open_paths:
            return True
        return hmac.compare_digest(given_key(scope).encode("latin-1", "replace"), self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not self._authorised(scope):
            message = "missing or wrong API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"
            await error(path, 401, message, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        if scope["method"] != "POST" or not path.startswith(self.limited_prefixes):
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_concurrent:
            message = f"server busy: {self.max_concurrent} requests in flight; retry after {self.retry_after} s"
            await error(path, 503, message, {"Retry-After": str(self.retry_after)})(scope, receive, send)
            return
        self.active += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.active -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        body_deadline = loop.time() + self.body_timeout
        body_done = started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(body_deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        path = scope["path"]
        try:
            await asyncio.wait_for(self.app(scope, timed_receive, tracked_send), self.timeout)
        except BodyTimeout:
            if not started:
                message = f"request body not received within {self.body_timeout:g} s"
                await error(path, 408, message, {"Connection": "close"})(scope, receive, send)
        except asyncio.TimeoutError:
            if not started:
                await error(path, 504, f"no answer within {self.timeout:g} s")(scope, receive, send)
