"""`python -m project.serve` as a real subprocess on a free loopback port, in a session of its own, for the
serving tests: started, waited for (health 200), and stopped with nothing of its process tree left."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 120  # spawning the worker imports torch; slow on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class RunningServer:
    proc: subprocess.Popen
    url: str
    port: int
    log: Path
    cwd: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL whatever is left of the process group (session) we started."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_healthy(server: RunningServer, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.output()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}/health", timeout=2, headers=headers).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"server not healthy after {STARTUP_TIMEOUT_S} s:\n{server.output()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def serving(bundle: Path, workdir: Path, *overrides: str, env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    """The server started from `workdir` (its working directory) with `overrides`, healthy; stopped after."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "project.serve",
        f"bundle={bundle}",
        f"port={port}",
        "threads=1",  # the worker shares 2 cores with the HTTP process and the test
        f"paths.log_dir={workdir / 'logs'}",
        *overrides,
    ]
    log = workdir / "server.log"
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=full_env, cwd=workdir
        )
    server = RunningServer(proc, f"http://127.0.0.1:{port}", port, log, workdir)
    try:
        wait_healthy(server)
        yield server
    finally:
        stop(proc)
