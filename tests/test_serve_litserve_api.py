"""`SupervisedServer` relies on LitServe internals that have no public hook in 0.2.x. An upgrade that renames
one, changes its parameters or stops calling it must fail here by name, not as a server that hangs or
keeps a port open on shutdown."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest

ls = pytest.importorskip("litserve")

from project.inference.supervisor import SupervisedServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# the LitServer methods SupervisedServer overrides: their parameters, as LitServe's `run` passes them
OVERRIDDEN: dict[str, list[str]] = {
    "_init_manager": ["self", "num_api_servers"],
    "_start_server": ["self", "port", "num_uvicorn_servers", "log_level", "sockets", "uvicorn_worker_type", "kwargs"],
    "_perform_graceful_shutdown": ["self", "manager", "uvicorn_workers", "shutdown_reason"],
}
# what LitServer's `run` must still do for the overrides and the signal path to take effect
RUN_USES = [
    "_init_manager(",
    "_start_server(",
    "_perform_graceful_shutdown(",
    "_monitor_workers",
    "except KeyboardInterrupt",
]
# attributes LitServer's __init__ sets that SupervisedServer reads or overrides
INIT_SETS = ["_monitor_workers", "uvicorn_graceful_timeout", "restart_workers"]


def internals_problems(server_class: type) -> list[str]:
    """Every internal SupervisedServer relies on that `server_class` (a LitServer) lacks, by name."""
    problems = []
    for name, expected in OVERRIDDEN.items():
        method = getattr(server_class, name, None)
        if method is None:
            problems.append(f"LitServer.{name} is gone")
            continue
        found = list(inspect.signature(method).parameters)
        if found != expected:
            problems.append(f"LitServer.{name} takes {found}, SupervisedServer overrides it as {expected}")
    run_source = inspect.getsource(server_class.run)
    problems += [f"LitServer.run no longer uses {use!r}" for use in RUN_USES if use not in run_source]
    init_source = inspect.getsource(server_class.__init__)
    problems += [f"LitServer.__init__ no longer sets {a}" for a in INIT_SETS if f"self.{a} =" not in init_source]
    from litserve.transport.process_transport import MPQueueTransport

    if "send_sentinel" not in inspect.signature(MPQueueTransport.close).parameters:
        problems.append("MPQueueTransport.close has no send_sentinel parameter")
    return problems


def test_the_litserve_internals_the_supervisor_overrides_are_there() -> None:
    assert internals_problems(ls.LitServer) == []


def test_a_changed_internal_is_named() -> None:
    class Changed(ls.LitServer):  # as an upgrade might: one renamed parameter, one method gone from run
        def _init_manager(self, num_workers: int): ...

    Changed._perform_graceful_shutdown = None
    assert internals_problems(Changed) == [
        "LitServer._init_manager takes ['self', 'num_workers'], SupervisedServer overrides it as "
        "['self', 'num_api_servers']",
        "LitServer._perform_graceful_shutdown is gone",
    ]


def test_the_supervisor_overrides_every_internal_it_is_checked_for() -> None:
    for name, expected in OVERRIDDEN.items():
        assert name in vars(SupervisedServer), name
        params = list(inspect.signature(getattr(SupervisedServer, name)).parameters)
        assert params == expected, (name, params)


def test_the_installed_litserve_is_in_the_pinned_range() -> None:
    """The pin in pyproject.toml is the range these checks were run on."""
    pins = re.findall(r'"litserve([^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert pins and set(pins) == {">=0.2.17,<0.3"}, pins
    installed = tuple(int(p) for p in version("litserve").split(".")[:3])
    assert (0, 2, 17) <= installed < (0, 3), installed


def test_restart_workers_is_refused() -> None:
    """A dead worker stops the server (exit 1) for its service manager to restart; LitServe's in-process
    restart would fight that."""

    class Api(ls.LitAPI):
        def setup(self, device): ...

        def predict(self, x):
            return x

    with pytest.raises(ValueError, match="stops on a dead worker"):
        SupervisedServer(Api(), accelerator="cpu", restart_workers=True)
    assert SupervisedServer(Api(), accelerator="cpu").restart_workers is False
