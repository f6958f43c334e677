"""`/predict` and V2 `infer` bodies vetted in the HTTP process, before LitServe's queue sees them.

`ImageRequestMiddleware` brings every `POST /predict` body (multipart upload, base64 JSON or form field, or a
raw image body) to one JSON shape `{"image": <base64>, "topk": k}`, and every V2 infer body (JSON or binary
tensors) to `{"v2": <vetted payload>}` on the same route, so both share the worker's dynamic batches. It answers
malformed requests itself (400, 413, 415; V2 with `{"error": ...}`), so they never reach the model worker.
It also lets uploads of any size through LitServe's queue, which cannot carry spooled upload files.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from project.inference.v2_protocol import HEADER_LENGTH, INFER_PATH, V2Error, check_model, parse_infer_request

API_PATH = "/predict"


class RejectRequest(Exception):
    """A request the HTTP process answers itself, with this status and reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def parse_topk(value: Any, default: int, max_topk: int) -> int:
    if value is None or value == "":
        return default
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise RejectRequest(400, f"topk must be an integer, got {value!r}") from None
    if isinstance(value, float | bool) or not 1 <= k <= max_topk:
        raise RejectRequest(400, f"topk must be an integer from 1 to {max_topk}, got {value!r}")
    return k


async def parse_request(
    content_type: str, body: bytes, query: dict[str, list[str]], default_topk: int, max_topk: int
) -> dict[str, Any]:
    """Any accepted request body → `{"image": base64 str, "topk": int}`, or `RejectRequest`."""
    media = content_type.split(";")[0].strip().lower()
    topk_query = query.get("topk", [None])[-1]
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode("latin-1"))]}

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(scope, receive).form(max_files=1, max_fields=10)
        except Exception as exc:  # malformed multipart: the parser's own exception types vary
            raise RejectRequest(400, f"malformed form body ({exc})") from None
        try:
            upload = form.get("image")
            topk = form.get("topk") or topk_query
            if isinstance(upload, str) and upload:  # `-F image=<base64>`: a text field, passed on as is
                return {"image": upload, "topk": parse_topk(topk, default_topk, max_topk)}
            if not isinstance(upload, UploadFile):
                upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise RejectRequest(400, "multipart request has no file: send the image in a field named 'image'")
            data = await upload.read()
        finally:
            await form.close()
        return {"image": base64.b64encode(data).decode("ascii"), "topk": parse_topk(topk, default_topk, max_topk)}
    if media in ("application/json", ""):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RejectRequest(
                400, 'body is not valid JSON: send {"image": "<base64>"} or a multipart upload'
            ) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise RejectRequest(400, 'JSON body must be an object with a base64 string "image"')
        topk = payload.get("topk", topk_query)
        return {"image": payload["image"], "topk": parse_topk(topk, default_topk, max_topk)}
    if media.startswith("image/") or media == "application/octet-stream":
        return {"image": base64.b64encode(body).decode("ascii"), "topk": parse_topk(topk_query, default_topk, max_topk)}
    raise RejectRequest(
        415, f"unsupported Content-Type {media!r}: use multipart/form-data, application/json or image/*"
    )


class ImageRequestMiddleware:
    """ASGI middleware (HTTP process): vet `POST /predict` and V2 infer bodies before LitServe sees them."""

    def __init__(
        self,
        app: ASGIApp,
        api_path: str = API_PATH,
        max_bytes: int = 20 << 20,
        default_topk: int = 1,
        max_topk: int = 10,
        model_name: str = "model",
        chw: tuple[int, int, int] = (3, 224, 224),
    ) -> None:
        self.app, self.api_path, self.max_bytes = app, api_path, max_bytes
        self.default_topk, self.max_topk = default_topk, max_topk
        self.model_name, self.chw = model_name, tuple(chw)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RejectRequest(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise RejectRequest(413, f"request body above the {self.max_bytes:,}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _v2_payload(self, scope: Scope, receive: Receive, route: Any) -> dict[str, Any]:
        check_model(route["name"], route["version"], self.model_name)
        try:
            body = await self._read_body(receive)
        except RejectRequest as exc:
            raise V2Error(exc.detail, exc.status) from None
        header_length = dict(scope.get("headers", [])).get(HEADER_LENGTH.encode())
        payload = parse_infer_request(
            body,
            header_length.decode("latin-1") if header_length is not None else None,
            self.chw,
            self.default_topk,
            self.max_topk,
        )
        return {"v2": payload}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = INFER_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if scope["type"] != "http" or scope["method"] != "POST" or (scope["path"] != self.api_path and not route):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        try:
            if route:
                payload = await self._v2_payload(scope, receive, route)
            else:
                body = await self._read_body(receive)
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                content_type = headers.get(b"content-type", b"").decode("latin-1")
                payload = await parse_request(content_type, body, query, self.default_topk, self.max_topk)
        except RejectRequest as exc:
            await JSONResponse({"detail": exc.detail}, status_code=exc.status)(scope, receive, send)
            return
        except V2Error as exc:
            await JSONResponse({"error": exc.message}, status_code=exc.status)(scope, receive, send)
            return
        new_body = json.dumps(payload).encode()
        new_headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"content-type", b"content-length")]
        new_headers += [(b"content-type", b"application/json"), (b"content-length", str(len(new_body)).encode())]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": new_body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(
            {**scope, "path": self.api_path, "raw_path": self.api_path.encode(), "headers": new_headers}, replay, send
        )
