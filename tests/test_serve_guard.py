"""The server's guard: binding beyond loopback needs an API key (constant-time compare) or an explicit
`allow_unauthenticated=true`; a cap on requests in flight (503 + Retry-After); body (408) and request (504)
time limits. A real server bound to 0.0.0.0 is reached through 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.responses import JSONResponse

from project.config import UserError
from project.inference.guard import RequestGuard
from project.serve import build_server
from tests.inference_helpers import digit_samples, png_bytes
from tests.serve_helpers import free_port, serving

KEY = "s3cret-key"


def test_an_open_bind_needs_a_key_or_an_explicit_opt_out(compose_cfg, digits_bundle: Path, monkeypatch) -> None:
    with pytest.raises(UserError, match="api_key"):
        build_server(compose_cfg("serve", [f"bundle={digits_bundle}", "host=0.0.0.0"]))
    with pytest.raises(UserError, match="host=localhost is not supported"):
        build_server(compose_cfg("serve", [f"bundle={digits_bundle}", "host=localhost"]))
    assert build_server(compose_cfg("serve", [f"bundle={digits_bundle}", "host=0.0.0.0", "allow_unauthenticated=true"]))
    assert build_server(compose_cfg("serve", [f"bundle={digits_bundle}", "host=::", f"api_key={KEY}"]))
    monkeypatch.setenv("SERVE_API_KEY", KEY)
    cfg = compose_cfg("serve", [f"bundle={digits_bundle}", "host=0.0.0.0"])
    assert cfg.api_key == KEY and build_server(cfg)
    with pytest.raises(UserError, match="must all be > 0"):
        build_server(compose_cfg("serve", [f"bundle={digits_bundle}", "max_concurrent=0"]))


@pytest.fixture(scope="module")
def guarded(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bound to every interface with a key from the environment; reached via 127.0.0.1 only."""
    overrides = ("host=0.0.0.0", "max_concurrent=2", "retry_after=7", "body_timeout=2")
    with serving(digits_bundle, tmp_path_factory.mktemp("guarded"), *overrides, env={"SERVE_API_KEY": KEY}) as running:
        yield running.url


def test_the_key_is_required_except_for_health_probes(guarded: str, digits_model) -> None:
    image = png_bytes(digit_samples(digits_model[1], 1)[0][0])
    files = {"image": ("d.png", image)}
    missing = httpx.post(f"{guarded}/predict", files=files, timeout=60)
    assert missing.status_code == 401 and "API key" in missing.json()["detail"]
    wrong = httpx.post(f"{guarded}/predict", files=files, headers={"X-API-Key": KEY + "x"}, timeout=60)
    assert wrong.status_code == 401
    assert httpx.get(f"{guarded}/v2/models/digits_cnn", timeout=60).json()["error"].startswith("missing or wrong")
    assert httpx.get(f"{guarded}/info", headers={"Authorization": "Bearer nope"}, timeout=60).status_code == 401
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        assert httpx.post(f"{guarded}/predict", files=files, headers=headers, timeout=60).status_code == 200
    for probe in ("/health", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{guarded}{probe}", timeout=60).status_code == 200


def partial_request(port: int, length: int = 1000) -> socket.socket:
    """An authorised POST whose body never completes (a slow client)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: image/png\r\n"
    client.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode() + b"\x89PNG")
    return client


def test_slow_bodies_get_408_and_the_cap_answers_503(guarded: str, digits_model) -> None:
    port = int(guarded.rsplit(":", 1)[1])
    slow = [partial_request(port) for _ in range(2)]  # the cap: 2 in flight
    time.sleep(0.5)
    busy = httpx.post(f"{guarded}/predict", content=b"x", headers={"X-API-Key": KEY}, timeout=60)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "7", busy.text
    for client in slow:
        answer = client.makefile("rb").read().decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and "not received within 2 s" in answer, answer
        client.close()
    image = png_bytes(digit_samples(digits_model[1], 1)[0][0])
    ok = httpx.post(f"{guarded}/predict", files={"image": ("d.png", image)}, headers={"X-API-Key": KEY}, timeout=60)
    assert ok.status_code == 200, ok.text


@pytest.fixture
def slow_app() -> Iterator[str]:
    """The guard around an app that takes 3 s per request, on a real uvicorn (127.0.0.1, a thread)."""

    async def app(scope, receive, send) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(3)
            await JSONResponse({"ok": True})(scope, receive, send)

    port = free_port()
    guard = RequestGuard(app, max_concurrent=2, retry_after=2, timeout=1.0, body_timeout=1.0)
    server = uvicorn.Server(uvicorn.Config(guard, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_requests_past_the_timeout_get_504_and_the_cap_holds(slow_app: str) -> None:
    response = httpx.post(f"{slow_app}/predict", content=b"{}", timeout=30)
    assert response.status_code == 504 and response.json() == {"detail": "no answer within 1 s"}
    v2 = httpx.post(f"{slow_app}/v2/models/m/infer", content=b"{}", timeout=30)
    assert v2.status_code == 504 and v2.json() == {"error": "no answer within 1 s"}
    assert httpx.get(f"{slow_app}/other", timeout=30).json() == {"ok": True}  # not limited: no timeout
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: httpx.post(f"{slow_app}/predict", timeout=30).status_code, range(4)))
    assert statuses == [503, 503, 504, 504]


def test_serve_config_asks_for_no_run_folder() -> None:
    from tests.conftest import compose_with_hydra

    quiet = compose_with_hydra(["bundle=x"], name="serve").hydra
    assert quiet.output_subdir is None and quiet.run.dir == "." and not quiet.job.chdir
    assert "file" not in quiet.job_logging.handlers  # no log file either
    assert compose_with_hydra(["bundle=x", "hydra=default"], name="serve").hydra.output_subdir == ".hydra"
