"""The bare-library figure beside each engine (`deploy.bare`, on in `deploy=full` / `make benchmark`).

Each backend's `bare` session is the library itself on the engine's saved files, built as its docs show,
with nothing of this project around the call. Timed interleaved with the engines, its p50 next to the
engine's is the wrapper's overhead (conversion, copies, session options), kept visible in every report.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from project.deploy.backends import Backend
from project.deploy.hardware import Engine
from project.deploy.results import BenchmarkReport, TimingPoint

log = logging.getLogger(__name__)

SUFFIX = " (bare library)"


def with_bare_sessions(
    built: Mapping[str, tuple[Backend, Engine]], work: Path, net: nn.Module, threads: int, device: torch.device
) -> dict[str, Engine]:
    """The engines in order, each followed by its bare session where the backend has one (built from the
    roundtrip folder `work/<name>`); a bare session that cannot be built is logged and left out. Bare
    sessions take CPU tensors, so engines that run on an accelerator get none."""
    engines: dict[str, Engine] = {}
    for name, (backend, engine) in built.items():
        engines[name] = engine
        if backend.runs_on_device and device.type != "cpu":
            continue
        try:
            bare = backend.bare(work / name, copy.deepcopy(net), threads)
        except Exception as exc:
            log.warning("deploy: no bare %s session to compare with: %s: %s", name, type(exc).__name__, exc)
            continue
        if bare is not None:
            engines[name + SUFFIX] = bare
    return engines


def split_bare(
    points: Mapping[str, dict[int, TimingPoint]], report: BenchmarkReport
) -> dict[str, dict[int, TimingPoint]]:
    """Move each bare session's points into its engine's entry (`bare` in benchmark.json: batch size →
    timing point); return the engines' own points."""
    own = {}
    for name, per_bs in points.items():
        if name.endswith(SUFFIX):
            engine = report.engines.get(name.removesuffix(SUFFIX))
            if engine is not None:
                engine.extra["bare"] = {str(bs): point.to_json() for bs, point in per_bs.items()}
        else:
            own[name] = per_bs
    return own
