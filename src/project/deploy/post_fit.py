"""The post-fit step, written once for the training callback and `python -m project.benchmark`: the
checkpoint's network → parity inputs (test split) and calibration inputs (train split) → `run_pipeline`.

A data module without a test split is not an error: parity then runs on random inputs labelled by the
eager network (the report's `parity_data.source` says so) and one warning names the reason. Any other
failure is logged exactly once and the step returns None, or it is raised (`deploy.strict`, and always in
`project.benchmark`, where the step is the whole command).

`isolate=True` (`deploy.isolate`, the callback's default) runs the same step in a fresh Python process.
Inside the training process the engines share the machine with what training left running: torch's
OpenMP pool (on the digits path a second libgomp and OpenBLAS pools loaded by scikit-learn), the progress
bar's refresh thread, W&B's threads and a heap shaped by training; at batch 1 any of these delays every
call (issue 13 item 8: ~40 % slower than a fresh process). The child is a `multiprocessing` *spawn*
process: a clean interpreter with the parent's `sys.path`, handed its inputs pickled (tensors and plain
settings; the data module stays in the parent). It dies with its parent, so a parent killed with SIGKILL
never leaves it writing into the run folder: on Linux the kernel sends it SIGKILL when the parent's
thread that started it ends (`prctl(PR_SET_PDEATHSIG)`, armed first thing in the child, then
`os.getppid()` is checked in case the parent died before that); elsewhere a watchdog thread polls
`os.getppid()` twice a second.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from project.deploy.checkpoint import load_net
from project.deploy.parity import ParityData, parity_from_loader
from project.deploy.pipeline import run_pipeline
from project.deploy.quantize.calibration import QuantizationData, quantization_from_datamodule
from project.deploy.report import log_to_loggers
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LoadedNet = tuple[nn.Module, dict[str, Any], dict[str, Any]]  # what `load_net` returns


def parity_from_test_split(datamodule: Any, max_samples: int | None) -> ParityData | None:
    """The data module's test batches, preprocessed as the network saw them in training; None (random
    inputs, with a warning) when it has no test split."""
    try:
        loader = datamodule.test_dataloader()
    except Exception as exc:  # no test split: Lightning's "not implemented", a missing split key, ...
        log.warning("deploy: no test split for parity (%s: %s): using random inputs", type(exc).__name__, exc)
        return None
    preprocess = getattr(datamodule, "preprocess", None)
    return parity_from_loader(loader, preprocess, max_samples, f"test split of {type(datamodule).__name__}")


@dataclass
class PostFitJob:
    """Everything the step needs, picklable, so it runs the same in this process or a spawned one."""

    checkpoint: str | None
    settings: DeploySettings
    output_dir: str
    parity: ParityData | None = None
    quantization: QuantizationData | None = None
    model: LoadedNet | None = None  # an already built network (random weights); else loaded from `checkpoint`

    def run(self, loggers: Iterable[Any] = ()) -> BenchmarkReport:
        net, net_config, input_spec = self.model if self.model is not None else load_net(self.checkpoint)
        return run_pipeline(
            net,
            net_config,
            input_spec,
            self.settings,
            self.output_dir,
            data=self.parity,
            loggers=loggers,
            checkpoint=self.checkpoint,
            quantization=self.quantization,
        )


def post_fit(
    checkpoint: str | Path | None,
    settings: DeploySettings,
    output_dir: str | Path,
    *,
    datamodule: Any = None,
    parity: ParityData | None = None,
    quantization: QuantizationData | None = None,
    model: LoadedNet | None = None,
    loggers: Iterable[Any] = (),
    isolate: bool = False,
    strict: bool | None = None,
) -> BenchmarkReport | None:
    """Build, check, time and ship engines for `checkpoint` (or `model`) into `output_dir`.

    Inputs come from `datamodule` (test split for parity, train split for int8 calibration) unless given
    as `parity` / `quantization`; with neither, parity runs on random inputs. Returns the report, or None
    after logging the failure once; `strict` (default `settings.strict`) raises it instead."""
    strict = settings.strict if strict is None else strict
    start = time.perf_counter()
    try:
        if datamodule is not None:
            if parity is None:
                parity = parity_from_test_split(datamodule, settings.parity_max_samples)
            if quantization is None and settings.wants_quantization:
                quantization = quantization_from_datamodule(datamodule, settings.int8)
        job = PostFitJob(
            str(checkpoint) if checkpoint else None, settings, str(output_dir), parity, quantization, model
        )
        if isolate:
            report = run_in_child(job)
            log_to_loggers(report, loggers)
        else:
            report = job.run(loggers)
    except Exception as exc:
        if strict:
            raise
        log.error("deploy: the post-fit step failed: %s: %s", type(exc).__name__, exc)
        return None
    log.info("deploy: post-fit step done in %.1f s", time.perf_counter() - start)
    return report


def run_in_child(job: PostFitJob) -> BenchmarkReport:
    """`job.run()` in a spawned process that dies with this one; its output goes to this console. Its
    error is raised here (with the child's traceback as a note); a child that dies silently is a
    RuntimeError."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # the child needs the device memory training cached
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    # plain pickle, not multiprocessing's: tensors travel as bytes through the pipe, not through /dev/shm
    # (64 MB by default in a container, too small for a test split)
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    child = context.Process(target=child_main, args=(payload, send, os.getpid()), name="post-fit")
    with main_module_hidden():
        child.start()
    send.close()  # the child holds the only sending end: its death reads as EOF here
    log.info("deploy: post-fit step running in process %d", child.pid)
    try:
        try:
            outcome = receive.recv()
        except EOFError:
            outcome = None
        child.join()
    finally:  # interrupted here (Ctrl-C, an exception): the child goes too
        if child.is_alive():
            child.kill()
            child.join()
        receive.close()
    if outcome is None:
        raise RuntimeError(f"the post-fit process exited with code {child.exitcode} before reporting (output above)")
    status, value = outcome
    if status == "error":
        raise value
    return value


@contextmanager
def main_module_hidden() -> Iterator[None]:
    """Start a spawn child without the parent's `__main__`. Spawn re-imports the parent's main script in
    the child so functions defined there can be unpickled; the job needs none, and a user's training
    script without an `if __name__ == "__main__":` guard would run again, training and all."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def child_main(payload: bytes, send: Connection, parent_pid: int) -> None:
    """The child's side: die with the parent, run the pickled job, send back ("ok", report) or ("error", exc)."""
    die_with_parent(parent_pid)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    try:
        job: PostFitJob = pickle.loads(payload)  # written by our parent a moment ago
        outcome: tuple[str, Any] = ("ok", job.run())
    except Exception as exc:  # reported (and logged) once, by the parent
        outcome = ("error", portable_error(exc))
    send.send(outcome)
    send.close()


def portable_error(exc: Exception) -> Exception:
    """`exc` with the child's traceback as a note, or a RuntimeError naming it when it does not pickle."""
    note = "in the post-fit process:\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    if hasattr(exc, "add_note"):  # Python 3.11+: shown under the traceback when the error is raised
        exc.add_note(note.rstrip())
    return exc


def die_with_parent(parent_pid: int) -> None:
    """Make this process end when `parent_pid` does (see the module docstring for how, and why both)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent is already gone (before the signal was armed)
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
