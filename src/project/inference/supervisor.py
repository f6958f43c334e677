"""`SupervisedServer`: LitServe with the process lifecycle a service manager expects.

* SIGTERM or SIGINT to the main process (systemd, Docker, Kubernetes, Ctrl-C): the HTTP processes stop
  accepting connections and drain the requests in flight for up to `shutdown_timeout` seconds, while the
  inference workers still answer them; then the workers stop, and the process exits 0.
* A worker (inference or HTTP) that dies is reported on one line and the whole server stops with exit
  code 1, so the service manager restarts it: never half-alive.
* Whatever happens, no child outlives the main process: everything left is terminated, then killed; and the
  inference workers ask the kernel for SIGTERM should the main process die by SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import litserve as ls
import psutil

log = logging.getLogger(__name__)


def _is_resource_tracker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("resource_tracker" in part for part in process.cmdline())
    return False


@contextlib.contextmanager
def _default_start_method(method: str) -> Iterator[None]:
    """Processes started through multiprocessing's default context use `method` inside the block."""
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(method, force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)  # None: back to the platform's default


class ShutdownRequested(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM/SIGINT: a KeyboardInterrupt, so the stop takes LitServe's own
    Ctrl-C path through `run` (LitServe installs no SIGTERM handler: the default would kill the process)."""


class SupervisedServer(ls.LitServer):
    def __init__(self, *args: Any, shutdown_timeout: float = 30.0, **kwargs: Any) -> None:
        if kwargs.get("restart_workers"):
            raise ValueError("SupervisedServer stops on a dead worker (exit 1) so that its service manager restarts it")
        super().__init__(*args, restart_workers=False, **{k: v for k, v in kwargs.items() if k != "restart_workers"})
        self.uvicorn_graceful_timeout = float(shutdown_timeout)  # uvicorn's own drain limit too
        # LitServe's monitor (no public switch) shuts down from its own thread; ours signals the main thread
        self._monitor_workers = False
        self.failure: str | None = None
        self._main_pid = os.getpid()
        self._stopping = threading.Event()
        self._uvicorn_workers: dict[Any, Any] = {}
        self._manager_processes: list[multiprocessing.Process] = []
        self.inference_workers: list[Any] = []

    # --- signals ---------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._main_pid:  # inherited by a forked HTTP process before uvicorn's own handlers
            raise SystemExit(0)
        if self._stopping.is_set():
            return  # already draining; the drain is bounded by shutdown_timeout
        self._stopping.set()
        if self.failure is None:
            log.warning(
                "%s: draining requests in flight (up to %g s), then stopping",
                signal.Signals(signum).name,
                self.uvicorn_graceful_timeout,
            )
        raise ShutdownRequested

    def run(self, *args: Any, **kwargs: Any) -> int:
        """Serve until a signal or a dead worker; the exit code: 0 after a requested stop, 1 after a failure."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        # from the start: a worker that dies while loading the model would leave LitServe waiting forever
        threading.Thread(target=self._watch_workers, daemon=True, name="worker-watch").start()
        try:
            super().run(*args, **kwargs)
        except ShutdownRequested:
            pass  # a signal before LitServe's own try block (workers still starting): cleaned up below
        except Exception as exc:  # e.g. LitServe: a worker failed to start; its queue manager died (EOFError)
            log.debug("server stopped on an exception", exc_info=True)
            if self.failure is None:
                self.failure = f"error: server stopped: {type(exc).__name__}: {exc}".rstrip(": ")
                log.error("%s", self.failure)
        finally:
            for s in previous:
                signal.signal(s, signal.SIG_IGN)  # the cleanup below must not be interrupted
            self._stopping.set()
            started = time.monotonic()
            self._reap_children()
            log.debug("children reaped in %.1f s", time.monotonic() - started)
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 1 if self.failure else 0

    # --- LitServe internals (no public hook in 0.2.x; tests/test_serve_litserve_api.py guards them) ----------
    def _init_manager(self, num_api_servers: int) -> Any:
        """LitServe's, with its queue manager *spawned* (Python's start-method hook; LitServe has none): a
        forked one would inherit the listening socket and keep the port accepting (into a queue nobody
        serves) while the HTTP processes drain."""
        before = set(multiprocessing.active_children())
        with _default_start_method("spawn"):
            manager = super()._init_manager(num_api_servers)
        self._manager_processes = [p for p in multiprocessing.active_children() if p not in before]  # watched too
        return manager

    def _start_server(self, port, num_uvicorn_servers, log_level, sockets, uvicorn_worker_type, **kwargs):
        self._uvicorn_workers = super()._start_server(
            port, num_uvicorn_servers, log_level, sockets, uvicorn_worker_type, **kwargs
        )
        for sock in sockets:  # the HTTP processes hold their copies: once they stop, the port refuses
            sock.close()
        return self._uvicorn_workers

    def _perform_graceful_shutdown(self, manager, uvicorn_workers, shutdown_reason: str = "normal") -> None:
        """HTTP processes first, all at once (they stop accepting and drain while the inference workers still
        answer), then the inference workers, then LitServe's queue manager. LitServe's own stops the HTTP
        processes one after another, so the later ones keep accepting while the first drains."""
        started = time.monotonic()
        for worker in uvicorn_workers.values():
            with contextlib.suppress(Exception):
                if worker.is_alive():
                    worker.terminate()  # SIGTERM: uvicorn's graceful shutdown
        deadline = time.monotonic() + self.uvicorn_graceful_timeout + 5
        for worker in uvicorn_workers.values():
            with contextlib.suppress(Exception):
                worker.join(timeout=max(deadline - time.monotonic(), 0.1))
        log.info("HTTP processes stopped after %.1f s", time.monotonic() - started)
        with contextlib.suppress(Exception):
            self._transport.close(send_sentinel=False)
        for worker in self.inference_workers:
            with contextlib.suppress(Exception):
                worker.terminate()
        for worker in self.inference_workers:
            with contextlib.suppress(Exception):
                worker.join(timeout=5)
        with contextlib.suppress(Exception):
            manager.shutdown()
        log.info("stopped in %.1f s", time.monotonic() - started)

    # --- watching and reaping --------------------------------------------------------------------------
    def _watch_workers(self) -> None:
        while not self._stopping.wait(0.5):
            named = [("inference worker", w) for w in list(self.inference_workers)]
            named += [("HTTP process", w) for w in self._uvicorn_workers.values()]
            named += [("queue manager", w) for w in self._manager_processes]
            for kind, worker in named:
                if not worker.is_alive() and not self._stopping.is_set():
                    self.failure = (
                        f"error: {kind} (pid {worker.pid}) died with exit code {worker.exitcode}; "
                        "stopping the server (exit 1) so that its supervisor restarts it"
                    )
                    log.error("%s", self.failure)
                    os.kill(self._main_pid, signal.SIGTERM)  # interrupts the main thread's wait
                    return

    def _reap_children(self, grace_s: float = 5.0) -> None:
        """Whatever is still running below this process: SIGTERM, then SIGKILL after `grace_s`."""
        # multiprocessing's resource tracker ignores SIGTERM by design and exits once this process has
        children = [c for c in psutil.Process().children(recursive=True) if not _is_resource_tracker(c)]
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=grace_s)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(alive, timeout=grace_s)
