"""The inference worker behind `python -m project.serve` (LitServe, Lightning's inference server).

`ClassifierAPI` runs in the inference worker process: it decodes + preprocesses each request the HTTP
process has vetted (`request_parsing.ImageRequestMiddleware`: `/predict` images and V2 infer tensors alike),
runs every valid one of a dynamic batch as one engine call, and answers each with the `Prediction` JSON,
the V2 response, or 400 and the reason for an input that cannot be read. A bad image never fails the other
requests of its batch.
"""

# No `from __future__ import annotations` here: LitServe reads `decode_request`/`encode_response`
# annotations at runtime to build the FastAPI route, and string annotations would confuse it.

import base64
import binascii
import ctypes
import signal
import sys
from typing import Any

import litserve as ls
import torch
from starlette.responses import JSONResponse

from project.inference.preprocess import DEFAULT_MAX_PIXELS, InvalidInput
from project.inference.request_parsing import API_PATH
from project.inference.v2_protocol import error_response, infer_response, input_batch


def decode_image_field(value: str) -> bytes:
    """Base64 (optionally a `data:image/...;base64,` URL) → bytes, or `InvalidInput`."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image is not valid base64") from None


def die_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when the process that started it dies, even by
    SIGKILL, so an inference worker never serves on as an orphan."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class ClassifierAPI(ls.LitAPI):
    """Inference worker: one `Predictor`, requests batched by LitServe.

    Decoded items are `("predict", uint8 C×H×W, topk)`, `("v2", float N×C×H×W, payload)`, an
    `InvalidInput` (a bad `/predict` image) or `("v2-error", message)`."""

    def __init__(
        self,
        bundle: str,
        backend: str | None = None,
        max_batch_size: int = 16,
        engine_batch_size: int | None = None,
        batch_timeout: float = 0.005,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        model_name: str = "model",
        trust_native_code: bool = False,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=API_PATH)
        self.bundle_dir, self.backend, self.model_name = bundle, backend, model_name
        self.max_pixels, self.threads = max_pixels, threads
        self.trust_native_code = trust_native_code  # load engines whose files run code (serve's setting)
        # images per engine call (None: the predictor's default); within the bundle's verified batch range
        self.engine_batch_size = engine_batch_size

    def setup(self, device: str) -> None:
        from project.inference.predictor import Predictor

        die_with_parent()
        if self.threads:
            torch.set_num_threads(int(self.threads))  # this worker process only
        self.predictor = Predictor.load(
            self.bundle_dir,
            backend=self.backend,
            batch_size=self.engine_batch_size,
            max_pixels=self.max_pixels,
            threads=self.threads,
            trust_native_code=self.trust_native_code,
        )

    def decode_request(self, request, **kwargs):  # unannotated on purpose: see the note at the top
        if "v2" in request:
            try:
                return "v2", input_batch(request["v2"], self.predictor.preprocessor), request["v2"]
            except InvalidInput as exc:
                return "v2-error", f"invalid image: {exc}"
        try:
            data = decode_image_field(request["image"])
            return "predict", self.predictor.preprocessor.to_uint8(data, "image"), int(request.get("topk") or 1)
        except InvalidInput as exc:
            return exc

    def predict(self, x: Any, **kwargs: Any) -> Any:
        """Batched: a list of decoded requests (LitServe's default `batch` keeps them a list). The images of
        `/predict` requests and the tensors of V2 requests run as one engine batch."""
        items = x if self.max_batch_size > 1 else [x]
        out = list(items)
        single = [i for i, item in enumerate(items) if isinstance(item, tuple) and item[0] == "predict"]
        tensors = [i for i, item in enumerate(items) if isinstance(item, tuple) and item[0] == "v2"]
        parts = [self.predictor.preprocessor.normalize(torch.stack([items[i][1] for i in single]))] if single else []
        parts += [items[i][1] for i in tensors]
        if parts:
            with torch.inference_mode():
                logits = self.predictor.logits(torch.cat(parts))
            predictions = self.predictor.decode(logits[: len(single)], [items[i][2] for i in single]) if single else []
            for i, prediction in zip(single, predictions, strict=True):
                out[i] = prediction
            offset = len(single)
            for i in tensors:
                n = len(items[i][1])
                out[i] = ("v2-result", logits[offset : offset + n], items[i][2])
                offset += n
        return out if self.max_batch_size > 1 else out[0]

    def encode_response(self, output, **kwargs):
        if isinstance(output, InvalidInput):
            return JSONResponse({"detail": f"invalid image: {output.reason}"}, status_code=400)
        if isinstance(output, tuple) and output[0] == "v2-error":
            return error_response(output[1])
        if isinstance(output, tuple) and output[0] == "v2-result":
            return infer_response(self.model_name, output[1], output[2], self.predictor.label)
        # the engine that answered, for the page (the JSON body stays what `Predictor.predict` gives)
        return JSONResponse(output.to_dict(), headers={"X-Engine": self.predictor.backend})
