"""The Open Inference Protocol (KServe V2, as spoken by Triton and KServe) beside `/predict`.

The HTTP process answers health, metadata and the repository index itself (`add_v2_routes`) and vets
every `POST /v2/models/{name}/infer` (`parse_infer_request`: JSON or the binary tensor extension, shapes,
dtypes, names) before anything reaches the model. The inference worker turns the vetted request into one
normalised batch (`input_batch`, with the Predictor's own preprocessing for encoded images) that runs in
the same dynamic batches as `/predict`, and writes the answer (`infer_response`): JSON, or binary
tensors when the client asks for `binary_data`.

Inputs: `input` FP32 [N, C, H, W] already preprocessed, or `images` BYTES [N] of encoded images (raw
bytes in the binary extension, base64 strings in JSON). Outputs: `logits`, `probabilities` FP32 [N, K]
and `labels` BYTES [N, topk]; request parameter `topk` (default `serve.topk`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from project.inference.preprocess import Preprocessor

VERSION = "1"
TENSOR_INPUT, IMAGES_INPUT = "input", "images"
OUTPUTS = ("logits", "probabilities", "labels")
INFER_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
HEADER_LENGTH = "inference-header-content-length"
MAX_BATCH = 4096  # images per infer request: a bound on what one request can make the worker hold


class V2Error(Exception):
    """A request answered with the protocol's error JSON `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def error_response(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def model_metadata(name: str, spec: Mapping[str, Any], num_classes: int, engine: str) -> dict[str, Any]:
    c, h, w = (int(spec[k]) for k in ("channels", "height", "width"))
    return {
        "name": name,
        "versions": [VERSION],
        "platform": f"project_{engine}",
        "inputs": [
            {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, c, h, w]},
            {"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, num_classes]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, num_classes]},
            {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
        ],
    }


def check_model(name: str, version: str | None, served: str) -> None:
    if name != served:
        raise V2Error(f"unknown model {name!r}: this server serves {served!r}")
    if version not in (None, "", VERSION):
        raise V2Error(f"unknown version {version!r} of model {name!r}: it has version {VERSION!r}")


# --- HTTP process: vet a request --------------------------------------------------------------------
def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise V2Error(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise V2Error(f"Inference-Header-Content-Length {n} does not fit the {len(body)}-byte body")
        json_part, binary = body[:n], body[n:]
    try:
        request = json.loads(json_part)
    except (ValueError, UnicodeDecodeError):
        raise V2Error("the inference header is not valid JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise V2Error('the inference request must be a JSON object with an "inputs" list')
    return request, binary


def _bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """The binary BYTES layout: each element a 4-byte little-endian length, then its bytes."""
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise V2Error("BYTES tensor data is truncated (a 4-byte length is cut short)")
        (size,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + size > len(raw):
            raise V2Error("BYTES tensor data is truncated (an element is shorter than its length)")
        out.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    if len(out) != count:
        raise V2Error(f"BYTES tensor holds {len(out)} elements, its shape says {count}")
    return out


def _tensor_payload(tensor: dict[str, Any], data: bytes | None, chw: tuple[int, int, int]) -> dict[str, Any]:
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise V2Error(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if name == TENSOR_INPUT:
        if datatype != "FP32":
            raise V2Error(f"input {name!r} must be FP32 (preprocessed), got {datatype!r}")
        if len(shape) != 4 or tuple(shape[1:]) != chw or not 1 <= shape[0] <= MAX_BATCH:
            raise V2Error(
                f"input {name!r} must have shape [N, {', '.join(map(str, chw))}] (N ≤ {MAX_BATCH}), got {shape}"
            )
        count = int(np.prod(shape))
        if data is not None:
            if len(data) != count * 4:
                raise V2Error(f"input {name!r}: {len(data)} bytes of data, shape {shape} needs {count * 4}")
            array = np.frombuffer(data, dtype="<f4")
        else:
            try:
                array = np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise V2Error(f'input {name!r}: "data" must be a list of {count} numbers') from None
            if array.size != count:
                raise V2Error(f"input {name!r}: {array.size} values in data, shape {shape} needs {count}")
        if not np.isfinite(array).all():
            raise V2Error(f"input {name!r} contains NaN or infinity")
        return {"input": name, "shape": shape, "data": base64.b64encode(array.astype("<f4").tobytes()).decode()}
    if name == IMAGES_INPUT:
        if datatype != "BYTES":
            raise V2Error(f"input {name!r} must be BYTES (encoded images), got {datatype!r}")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or not 1 <= shape[0] <= MAX_BATCH:
            raise V2Error(f"input {name!r} must have shape [N] or [N, 1] (N ≤ {MAX_BATCH}), got {shape}")
        if data is not None:
            images = [base64.b64encode(x).decode() for x in _bytes_elements(data, shape[0])]
        else:
            values = tensor.get("data")
            if not isinstance(values, list) or len(values) != shape[0] or not all(isinstance(v, str) for v in values):
                raise V2Error(f'input {name!r}: JSON "data" must be a list of {shape[0]} base64 strings')
            try:
                images = [base64.b64encode(base64.b64decode(v, validate=True)).decode() for v in values]
            except (binascii.Error, ValueError):
                raise V2Error(f"input {name!r}: JSON data must be base64 strings (or use binary data)") from None
        return {"input": name, "shape": shape, "images": images}
    raise V2Error(f"unknown input {name!r}: send {TENSOR_INPUT!r} (FP32 [N, C, H, W]) or {IMAGES_INPUT!r} (BYTES [N])")


def parse_infer_request(
    body: bytes, header_length: str | None, chw: tuple[int, int, int], default_topk: int, max_topk: int
) -> dict[str, Any]:
    """A V2 infer body → the compact payload the worker runs, or `V2Error`."""
    request, binary = _split_body(body, header_length)
    if len(request["inputs"]) != 1 or not isinstance(request["inputs"][0], dict):
        raise V2Error(f"send exactly one input ({TENSOR_INPUT!r} or {IMAGES_INPUT!r}), got {len(request['inputs'])}")
    tensor = request["inputs"][0]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None and (not isinstance(size, int) or size != len(binary)):
        raise V2Error(f"binary_data_size {size!r} does not match the {len(binary)} bytes after the header")
    if size is None and binary:
        raise V2Error("binary data follows the header but no input declares binary_data_size")
    payload = _tensor_payload(tensor, binary if size is not None else None, chw)

    parameters = request.get("parameters") or {}
    topk = parameters.get("topk", default_topk)
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= max_topk:
        raise V2Error(f"parameter topk must be an integer from 1 to {max_topk}, got {topk!r}")
    wanted = request.get("outputs")
    if wanted is None:
        outputs = [[name, bool(parameters.get("binary_data_output", False))] for name in OUTPUTS]
    elif isinstance(wanted, list) and all(isinstance(o, dict) for o in wanted):
        outputs = [[o.get("name"), bool((o.get("parameters") or {}).get("binary_data", False))] for o in wanted]
        unknown = [name for name, _ in outputs if name not in OUTPUTS]
        if unknown:
            raise V2Error(f"unknown output {unknown[0]!r}: this model has {', '.join(OUTPUTS)}")
    else:
        raise V2Error('"outputs" must be a list of objects with a "name"')
    request_id = request.get("id")
    return {**payload, "topk": topk, "outputs": outputs, "id": request_id if isinstance(request_id, str) else None}


# --- inference worker: run and answer ------------------------------------------------------------------
def input_batch(payload: Mapping[str, Any], preprocessor: Preprocessor) -> torch.Tensor:
    """The normalised float32 N×C×H×W batch of a vetted request; `InvalidInput` for an unreadable image."""
    if payload["input"] == TENSOR_INPUT:
        data = bytearray(base64.b64decode(payload["data"]))
        return torch.frombuffer(data, dtype=torch.float32).reshape(payload["shape"])
    images = [
        preprocessor.to_uint8(base64.b64decode(image), f"input {IMAGES_INPUT!r} element {i}")
        for i, image in enumerate(payload["images"])
    ]
    return preprocessor.normalize(torch.stack(images))


def _serialize_bytes(values: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in (x.encode() for x in values.reshape(-1)))


def infer_response(
    model_name: str, logits: torch.Tensor, payload: Mapping[str, Any], label: Callable[[int], str]
) -> Response:
    """The V2 answer: JSON, or JSON header + binary tensors (`Inference-Header-Content-Length`)."""
    logits = logits.float()
    probabilities = torch.softmax(logits, dim=1)
    k = min(int(payload["topk"]), logits.shape[1])
    top = probabilities.topk(k, dim=1).indices.tolist()
    tensors = {
        "logits": logits.numpy(),
        "probabilities": probabilities.numpy(),
        "labels": np.array([[label(j) for j in row] for row in top], dtype=object).reshape(len(top), k),
    }
    outputs, chunks = [], []
    for name, binary in payload["outputs"]:
        array = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": "BYTES" if name == "labels" else "FP32"}
        entry["shape"] = list(array.shape)
        if binary:
            raw = _serialize_bytes(array) if name == "labels" else array.astype("<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model_name, "model_version": VERSION, "outputs": outputs}
    if payload.get("id"):
        body["id"] = payload["id"]
    header = json.dumps(body).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# --- HTTP process: the routes that need no model ---------------------------------------------------
def add_v2_routes(app: Any, metadata: dict[str, Any], ready: Callable[[], bool]) -> None:
    """Health, server and model metadata, readiness and the repository index on a FastAPI app."""
    served = metadata["name"]

    def status(ok: bool) -> Response:
        return Response(status_code=200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {"name": "project", "version": VERSION, "extensions": ["binary_tensor_data", "model_repository"]}
        )

    async def live(request: Request) -> Response:
        return status(True)

    async def server_ready(request: Request) -> Response:
        return status(ready())

    def model_route(answer: Callable[[], Response]) -> Callable[..., Any]:
        async def route(request: Request) -> Response:
            try:
                check_model(request.path_params["name"], request.path_params.get("version"), served)
            except V2Error as exc:
                return error_response(exc.message, exc.status)
            return answer()

        return route

    async def index(request: Request) -> Response:
        state = "READY" if ready() else "UNAVAILABLE"
        return JSONResponse([{"name": served, "version": VERSION, "state": state, "reason": ""}])

    app.add_api_route("/v2", server_metadata, methods=["GET"])
    app.add_api_route("/v2/health/live", live, methods=["GET"])
    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"])
    app.add_api_route("/v2/repository/index", index, methods=["POST"])
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_route(lambda: JSONResponse(metadata)), methods=["GET"])
        app.add_api_route(f"{prefix}/ready", model_route(lambda: status(ready())), methods=["GET"])
