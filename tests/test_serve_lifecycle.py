"""`python -m project.serve` as a service manager runs it: a signal to the main PID only drains the request
in flight, then every process of the server's tree exits, the port refuses, and the exit code is 0; a worker
that dies takes the server down with exit code 1 instead of leaving it half-alive. No run folder is written."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.inference_helpers import digit_samples, png_bytes
from tests.isolated_cli import live_processes
from tests.serve_helpers import RunningServer, port_refuses, serving


def tree(pid: int) -> list[psutil.Process]:
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def assert_all_gone(server: RunningServer, processes: list[psutil.Process], within_s: float = 15) -> None:
    """Every process the server had (and anything else in its session) has exited; the port refuses."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        alive += [pid for pid in live_processes(server.proc.pid) if pid not in alive]
        if not alive:
            break
        time.sleep(0.3)
    assert not alive, f"still running after the main process exited: {alive}\n{server.output()[-3000:]}"
    assert port_refuses(server.port)


def assert_no_run_folder(server: RunningServer) -> None:
    assert not (server.cwd / "logs").exists(), list((server.cwd / "logs").rglob("*"))
    assert sorted(p.name for p in server.cwd.iterdir()) == ["server.log"]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_the_request_in_flight_then_everything_exits(
    digits_bundle: Path, digits_model, tmp_path: Path, signum: int
) -> None:
    images, labels = digit_samples(digits_model[1], 1)
    body = png_bytes(images[0])
    with serving(digits_bundle, tmp_path / "run", "shutdown_timeout=60", "body_timeout=120", "timeout=120") as server:
        processes = tree(server.proc.pid)
        assert len(processes) >= 3, processes  # main, HTTP process, inference worker (+ LitServe's manager)
        # a request in flight: headers and half its body sent, the rest to come after the signal
        client = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
        client.sendall(head.encode() + body[: len(body) // 2])
        time.sleep(1.0)
        os.kill(server.proc.pid, signum)  # the main PID only, as systemd/Docker/Kubernetes do
        wait_for(lambda: port_refuses(server.port), 45, "the port to stop accepting new connections")
        assert server.proc.poll() is None, "exited without draining the request in flight"
        client.sendall(body[len(body) // 2 :])
        response = client.makefile("rb").read().decode("latin-1")
        client.close()
        assert response.startswith("HTTP/1.1 200"), response
        assert f'"label":"{labels[0]}"' in response.replace(" ", ""), response
        assert server.proc.wait(timeout=60) == 0, server.output()[-3000:]
        assert_all_gone(server, processes)
        assert_no_run_folder(server)


def test_a_killed_worker_stops_the_server_with_exit_1(digits_bundle: Path, tmp_path: Path) -> None:
    with serving(digits_bundle, tmp_path / "run") as server:
        processes = tree(server.proc.pid)
        spawned = [p for p in processes if "spawn_main" in " ".join(p.cmdline())]  # the worker and LitServe's manager
        workers = [p for p in spawned if any("libtorch" in m.path for m in p.memory_maps())]
        assert len(workers) == 1, [p.cmdline() for p in processes]
        workers[0].kill()
        assert server.proc.wait(timeout=60) == 1, server.output()[-3000:]
        assert f"inference worker (pid {workers[0].pid}) died" in server.output()
        assert_all_gone(server, processes)
