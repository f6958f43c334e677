"""The Open Inference Protocol (KServe V2) on `python -m project.serve`, driven by the official client
(`tritonclient.http`) against a real server on 127.0.0.1: health, metadata, repository index, and infer with
FP32 tensors and encoded images, JSON and binary, equal to `/predict` and to `Predictor`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from project import Predictor
from tests.inference_helpers import digit_samples, png_bytes
from tests.serve_helpers import serving

MODEL = "digits_cnn"  # the bundle's network class, DigitsCNN


@pytest.fixture(scope="module")
def server(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(digits_bundle, tmp_path_factory.mktemp("serve_v2"), "max_batch_size=8", "max_topk=5") as running:
        yield running.url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def images(digits_model) -> list[bytes]:
    return [png_bytes(image) for image in digit_samples(digits_model[1], 6)[0]]


def test_health_metadata_and_repository_index(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL
    assert {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]} == {
        "input": ("FP32", [-1, 1, 8, 8]),
        "images": ("BYTES", [-1]),
    }
    assert {t["name"] for t in metadata["outputs"]} == {"logits", "probabilities", "labels"}
    assert client.get_model_repository_index() == [{"name": MODEL, "version": "1", "state": "READY", "reason": ""}]
    assert not client.is_model_ready("other")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("kind", ["FP32", "BYTES"])
def test_infer_equals_predictor_and_predict(
    client: triton.InferenceServerClient, server: str, digits_bundle: Path, images: list[bytes], kind: str, binary: bool
) -> None:
    predictor = Predictor.load(digits_bundle)
    batch = predictor.preprocess(images)
    if kind == "FP32":
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch.numpy(), binary_data=binary)
    else:  # encoded images: raw bytes in the binary extension, base64 strings in JSON
        values = images if binary else [base64.b64encode(image) for image in images]
        tensor = triton.InferInput("images", [len(images)], "BYTES")
        tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("logits", "probabilities", "labels")]
    result = client.infer(MODEL, [tensor], outputs=outputs, parameters={"topk": 3}, request_id="r1")
    assert result.get_response()["id"] == "r1"

    expected = predictor.predict(images, topk=3)
    np.testing.assert_allclose(result.as_numpy("logits"), predictor.logits(batch).numpy(), atol=1e-5)
    probabilities = result.as_numpy("probabilities")
    labels = result.as_numpy("labels")
    assert labels.shape == (len(images), 3)
    for i, prediction in enumerate(expected):
        assert [x.decode() if isinstance(x, bytes) else x for x in labels[i]] == [t["label"] for t in prediction.topk]
        assert probabilities[i].max() == pytest.approx(prediction.score, abs=1e-5)
        over_http = httpx.post(f"{server}/predict", files={"image": ("d.png", images[i])}, timeout=60).json()
        assert over_http["label"] == prediction.label and over_http["score"] == pytest.approx(probabilities[i].max())


def test_all_outputs_binary_by_default(client: triton.InferenceServerClient, images: list[bytes]) -> None:
    tensor = triton.InferInput("images", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(images[:2], dtype=object))
    result = client.infer(MODEL, [tensor])  # no outputs named: the client asks for all of them, binary
    assert result.as_numpy("probabilities").shape == (2, 10) and result.as_numpy("labels").shape == (2, 1)


def infer_error(client: triton.InferenceServerClient, tensor: triton.InferInput, model: str = MODEL, **kw) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [tensor], **kw)
    assert str(caught.value.status()) == "400", caught.value
    return caught.value.message()


def test_bad_requests_get_400_with_the_protocol_error(
    client: triton.InferenceServerClient, server: str, images: list[bytes]
) -> None:
    wrong_shape = triton.InferInput("input", [1, 1, 4, 4], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 1, 4, 4), np.float32))
    assert "shape [N, 1, 8, 8]" in infer_error(client, wrong_shape)
    wrong_dtype = triton.InferInput("input", [1, 1, 8, 8], "FP64")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float64))
    assert "must be FP32" in infer_error(client, wrong_dtype)
    good = triton.InferInput("input", [1, 1, 8, 8], "FP32")
    good.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
    assert "unknown model 'nope'" in infer_error(client, good, model="nope")
    assert "topk" in infer_error(client, good, parameters={"topk": 6})
    wrong_name = triton.InferInput("pixels", [1, 1, 8, 8], "FP32")
    wrong_name.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
    assert "unknown input 'pixels'" in infer_error(client, wrong_name)
    undecodable = triton.InferInput("images", [2], "BYTES")
    undecodable.set_data_from_numpy(np.array([images[0], b"not an image"], dtype=object))
    assert "element 1: not a recognised image" in infer_error(client, undecodable)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")

    infer_url = f"{server}/v2/models/{MODEL}/infer"
    for body, headers in (
        (b"{not json", {}),
        (b'{"inputs": []}', {}),
        (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [1, 2]}]}', {}),
        (b'{"inputs": []}xx', {"Inference-Header-Content-Length": "999"}),
    ):
        response = httpx.post(infer_url, content=body, headers=headers, timeout=60)
        assert response.status_code == 400 and isinstance(response.json()["error"], str), response.text
    ok = triton.InferInput("images", [1], "BYTES")
    ok.set_data_from_numpy(np.array(images[:1], dtype=object))
    assert client.infer(MODEL, [ok]).as_numpy("labels").shape == (1, 1)  # still serving
