"""`python -m project.serve`: a real server on 127.0.0.1 in a subprocess, real HTTP requests (httpx),
bad requests answered 400 while it keeps serving, concurrent requests batched together."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from project import Predictor
from project.config import UserError
from project.serve import build_server
from tests.inference_helpers import bomb_png, digit_samples, png_bytes
from tests.serve_helpers import serving

# the shared fixtures (digits_model, digits_bundle): registered once, so session scope holds across files


@pytest.fixture(scope="module")
def server(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server on a free loopback port, ready (health 200); its URL."""
    overrides = ("max_batch_size=8", "batch_timeout=0.02", "max_payload_mb=1", "max_pixels=1000000", "max_topk=5")
    with serving(digits_bundle, tmp_path_factory.mktemp("serve"), *overrides) as running:
        yield running.url


@pytest.fixture(scope="module")
def digits(digits_model) -> tuple[np.ndarray, np.ndarray]:
    return digit_samples(digits_model[1], 24)


def truncated_png() -> bytes:
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    return data[: len(data) // 2]


def post_image(url: str, data: bytes, **params) -> httpx.Response:
    return httpx.post(f"{url}/predict", files={"image": ("digit.png", data, "image/png")}, data=params, timeout=30)


def test_health_and_info(server: str) -> None:
    assert httpx.get(f"{server}/health", timeout=5).text == "ok"
    info = httpx.get(f"{server}/info", timeout=5).json()["model"]
    assert info["classes"] == [str(i) for i in range(10)] and info["input"] == {"channels": 1, "height": 8, "width": 8}


def test_answers_match_the_python_api(server: str, digits_bundle: Path, digits) -> None:
    images, _ = digits
    predictor = Predictor.load(digits_bundle)
    for image in images[:4]:
        expected = predictor.predict(image, topk=3)[0].to_dict()
        got = post_image(server, png_bytes(image), topk=3)
        assert got.status_code == 200, got.text
        body = got.json()
        assert set(body) == set(expected) and body["index"] == expected["index"] and body["label"] == expected["label"]
        assert [t["index"] for t in body["topk"]] == [t["index"] for t in expected["topk"]]
        assert body["score"] == pytest.approx(expected["score"], abs=1e-5)


def test_base64_json_form_raw_body_and_data_url(server: str, digits) -> None:
    images, labels = digits
    encoded = base64.b64encode(png_bytes(images[0])).decode()
    for response in (
        httpx.post(f"{server}/predict", json={"image": encoded, "topk": 2}, timeout=30),
        httpx.post(f"{server}/predict", json={"image": f"data:image/png;base64,{encoded}", "topk": 2}, timeout=30),
        httpx.post(f"{server}/predict", data={"image": encoded, "topk": "2"}, timeout=30),  # url-encoded form
        httpx.post(f"{server}/predict", files={"image": (None, encoded)}, data={"topk": "2"}, timeout=30),
        httpx.post(
            f"{server}/predict?topk=2", content=png_bytes(images[0]), headers={"Content-Type": "image/png"}, timeout=30
        ),
    ):
        assert response.status_code == 200, response.text
        assert response.json()["label"] == str(labels[0]) and len(response.json()["topk"]) == 2


BAD_REQUESTS = {  # id: (request kwargs, status, what the detail must say)
    "corrupt_image": (lambda: {"files": {"image": ("x.png", b"\x89PNG\r\n\x1a\nbroken")}}, 400, "invalid image"),
    "truncated_image": (lambda: {"files": {"image": ("t.png", truncated_png())}}, 400, "truncated"),
    "text_file": (lambda: {"files": {"image": ("x.txt", b"hello")}}, 400, "not a recognised image"),
    "empty_file": (lambda: {"files": {"image": ("x.png", b"")}}, 400, "empty file"),
    "bomb": (lambda: {"files": {"image": ("b.png", bomb_png())}}, 400, "too large"),
    "above_max_pixels": (
        lambda: {"files": {"image": ("l.png", png_bytes(np.zeros((1001, 1000), np.uint8)))}},
        400,
        "limit",
    ),
    "no_file_field": (lambda: {"data": {"topk": "1"}, "files": {"other": ("", b"")}}, 400, "no file"),
    "bad_base64": (lambda: {"json": {"image": "@@not base64@@"}}, 400, "base64"),
    "bad_json": (lambda: {"content": b"{nope", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
    "json_without_image": (lambda: {"json": {"picture": "x"}}, 400, '"image"'),
    "topk_zero": (lambda: {"json": {"image": "", "topk": 0}}, 400, "topk"),
    "topk_above_max": (lambda: {"json": {"image": "", "topk": 6}}, 400, "from 1 to 5"),
    "topk_not_int": (lambda: {"files": {"image": ("x.png", b"x")}, "data": {"topk": "many"}}, 400, "topk"),
    "wrong_content_type": (lambda: {"content": b"hi", "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type"),
    "too_big": (lambda: {"content": b"\0" * (1 << 20) + b"!", "headers": {"Content-Type": "image/png"}}, 413, "limit"),
}


@pytest.mark.parametrize(("make", "status", "detail"), list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_request_is_answered_and_serving_goes_on(server: str, digits, make, status: int, detail: str) -> None:
    response = httpx.post(f"{server}/predict", timeout=30, **make())
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"], response.text
    images, labels = digits
    ok = post_image(server, png_bytes(images[1]))
    assert ok.status_code == 200 and ok.json()["label"] == str(labels[1])


def test_concurrent_requests_with_bad_ones_in_the_batch(server: str, digits) -> None:
    """Concurrent clients fill dynamic batches; a bad image among them fails only its own request."""
    images, labels = digits
    bodies = [png_bytes(image) for image in images]
    bad = {3, 10, 17}
    for i in bad:
        bodies[i] = b"definitely not a png"

    def send(i: int) -> tuple[int, dict]:
        response = post_image(server, bodies[i])
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(len(bodies))))
    for i, (status, body) in enumerate(results):
        if i in bad:
            assert status == 400 and "invalid image" in body["detail"], body
        else:
            assert status == 200, body
            assert body["label"] == str(labels[i]) or body["score"] < 0.9, (i, body)  # the model's own answer
    accuracy = np.mean([results[i][1].get("label") == str(labels[i]) for i in range(len(bodies)) if i not in bad])
    assert accuracy >= 0.85


def test_config_binds_loopback_and_refuses_a_missing_bundle(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("serve", [f"bundle={tmp_path}/nope"])
    assert cfg.host == "127.0.0.1"
    with pytest.raises(UserError, match="bundle not found"):
        build_server(cfg)
    with pytest.raises(UserError, match="bundle is required"):
        build_server(compose_cfg("serve"))


def test_responses_are_plain_json(server: str, digits) -> None:
    response = post_image(server, png_bytes(digits[0][2]))
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(response.text)["topk"][0]["index"] == response.json()["index"]


def test_info_names_the_engine_asked_for_and_the_verified_batch_range(
    pipeline_bundle: Path, digits, tmp_path: Path
) -> None:
    expected = Predictor.load(pipeline_bundle, backend="eager")
    assert Predictor.load(pipeline_bundle).backend == "onnxruntime"  # the chosen engine is another one
    with serving(pipeline_bundle, tmp_path, "backend=eager") as running:
        info = httpx.get(f"{running.url}/info", timeout=5).json()["model"]
        assert info["engine"] == "eager"
        assert info["max_batch_size"] == 8 and info["verified_batch_sizes"] == [1, 8]  # 16 lowered to the range
        name = info["model_name"]
        assert httpx.get(f"{running.url}/v2/models/{name}", timeout=5).json()["platform"] == "project_eager"
        image = digits[0][0]
        got = post_image(running.url, png_bytes(image), topk=3).json()
        assert got == expected.predict(image, topk=3)[0].to_dict()


def test_an_engine_or_batch_the_bundle_cannot_give_is_refused_before_starting(
    compose_cfg, pipeline_bundle: Path
) -> None:
    with pytest.raises(UserError, match=r"^bundle has no engine 'openvino'; it has onnxruntime, eager$"):
        build_server(compose_cfg("serve", [f"bundle={pipeline_bundle}", "backend=openvino"]))
    with pytest.raises(UserError, match=r"^max_batch_size=9 is above the largest batch .*\(8: parity checked"):
        build_server(compose_cfg("serve", [f"bundle={pipeline_bundle}", "max_batch_size=9"]))
    with pytest.raises(UserError, match=r"^max_batch_size must be ≥ 1"):  # not LitServe's traceback
        build_server(compose_cfg("serve", [f"bundle={pipeline_bundle}", "max_batch_size=0"]))


def test_an_unnamed_engine_is_resolved_before_the_workers_so_info_names_the_fallback(
    compose_cfg, digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle whose chosen engine cannot load on this host (an engine kind this install does not know,
    like a TensorRT plan on a CPU box): with no `backend=`, /info and the workers both say the engine the
    fallback order gives here, never the chosen one that cannot run."""
    import torch

    from project.deploy.backends import BACKENDS
    from project.deploy.backends.eager import EagerBackend
    from tests.inference_helpers import build_bundle

    class Foreign(EagerBackend):
        kind = "foreign_test"

    net, data = digits_model
    eager = EagerBackend()
    with monkeypatch.context() as m:  # known on the machine that wrote the bundle, unknown here
        m.setitem(BACKENDS, Foreign.kind, Foreign)
        foreign = Foreign()
        engines = [(foreign, foreign.build(net, torch.zeros(1, 1, 8, 8), 8)), (eager, eager.build(net, None, 0))]
        bundle = build_bundle(tmp_path / "deploy", net, data, engines)
    server = build_server(compose_cfg("serve", [f"bundle={bundle}"]))
    assert server.model_metadata["engine"] == "eager"
    assert server.lit_api.backend == "eager"  # the workers load exactly what /info says


def test_an_engine_that_runs_code_is_served_only_when_trusted(
    compose_cfg, digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve resolves the unnamed engine in its own process: without trust_native_code=true an engine whose
    files run code when loaded (an inductor package) is skipped there, unopened, and the workers get the next."""
    from tests.test_predictor import native_bundle

    bundle, marker = native_bundle(digits_model, tmp_path, monkeypatch)
    server = build_server(compose_cfg("serve", [f"bundle={bundle}"]))
    assert server.model_metadata["engine"] == "eager" and server.lit_api.backend == "eager"
    assert not server.lit_api.trust_native_code and not marker.exists()
    with pytest.raises(UserError, match=r"^not loading engine native_test: .*trust_native_code=true"):
        build_server(compose_cfg("serve", [f"bundle={bundle}", "backend=native_test"]))
    trusted = build_server(compose_cfg("serve", [f"bundle={bundle}", "trust_native_code=true"]))
    assert trusted.model_metadata["engine"] == "native_test" and trusted.lit_api.trust_native_code
    assert marker.exists()
