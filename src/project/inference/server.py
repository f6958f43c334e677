"""The HTTP face of a `Predictor`, on LitServe (Lightning's inference server).

Two halves, in two processes:

* `ImageRequestMiddleware` runs in the HTTP process. It brings every `POST /predict` body (multipart
  upload, base64 JSON or form field, or a raw image body) to one JSON shape `{"image": <base64>, "topk": k}` and
  answers malformed requests itself (400, 413, 415), so they never reach the model worker. It also
  lets uploads of any size through LitServe's queue, which cannot carry spooled upload files.
* `ClassifierAPI` runs in the inference worker: decode + preprocess each request, run the valid ones
  as one batch (LitServe's dynamic batching), answer each with the `Prediction` JSON, or with 400 and
  the reason for an image that cannot be read. A bad image never fails the other requests of its batch.
"""

# No `from __future__ import annotations` here: LitServe reads `decode_request`/`encode_response`
# annotations at runtime to build the FastAPI route, and string annotations would confuse it.

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qs

import litserve as ls
import torch
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from project.inference.preprocess import DEFAULT_MAX_PIXELS, InvalidInput

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
    """ASGI middleware (HTTP process): normalise and vet `POST /predict` bodies before LitServe sees them."""

    def __init__(
        self,
        app: ASGIApp,
        api_path: str = API_PATH,
        max_bytes: int = 20 << 20,
        default_topk: int = 1,
        max_topk: int = 10,
    ) -> None:
        self.app, self.api_path, self.max_bytes = app, api_path, max_bytes
        self.default_topk, self.max_topk = default_topk, max_topk

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.api_path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        try:
            body = await self._read_body(receive)
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            payload = await parse_request(
                headers.get(b"content-type", b"").decode("latin-1"), body, query, self.default_topk, self.max_topk
            )
        except RejectRequest as exc:
            await JSONResponse({"detail": exc.detail}, status_code=exc.status)(scope, receive, send)
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

        await self.app({**scope, "headers": new_headers}, replay, send)


def decode_image_field(value: str) -> bytes:
    """Base64 (optionally a `data:image/...;base64,` URL) → bytes, or `InvalidInput`."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image is not valid base64") from None


class ClassifierAPI(ls.LitAPI):
    """Inference worker: one `Predictor`, requests batched by LitServe."""

    def __init__(
        self,
        bundle: str,
        backend: str | None = None,
        max_batch_size: int = 16,
        batch_timeout: float = 0.005,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=API_PATH)
        self.bundle_dir, self.backend = bundle, backend
        self.max_pixels, self.threads = max_pixels, threads

    def setup(self, device: str) -> None:
        from project.inference.predictor import Predictor

        if self.threads:
            torch.set_num_threads(int(self.threads))  # this worker process only
        self.predictor = Predictor.load(
            self.bundle_dir,
            backend=self.backend,
            batch_size=max(64, self.max_batch_size),
            max_pixels=self.max_pixels,
            threads=self.threads,
        )

    def decode_request(self, request, **kwargs):  # unannotated on purpose: see the note at the top
        """The middleware's JSON → (uint8 C×H×W, topk), or the `InvalidInput` to answer with 400."""
        try:
            data = decode_image_field(request["image"])
            return self.predictor.preprocessor.to_uint8(data, "image"), int(request.get("topk") or 1)
        except InvalidInput as exc:
            return exc

    def predict(self, x: Any, **kwargs: Any) -> Any:
        """Batched: a list of decoded requests (LitServe's default `batch` keeps them a list)."""
        items = x if self.max_batch_size > 1 else [x]
        good = [i for i, item in enumerate(items) if not isinstance(item, InvalidInput)]
        out = list(items)
        if good:
            images = torch.stack([items[i][0] for i in good])
            for i, prediction in zip(
                good, self.predictor.predict_uint8(images, [items[i][1] for i in good]), strict=True
            ):
                out[i] = prediction
        return out if self.max_batch_size > 1 else out[0]

    def encode_response(self, output, **kwargs):
        if isinstance(output, InvalidInput):
            return JSONResponse({"detail": f"invalid image: {output.reason}"}, status_code=400)
        return output.to_dict()
