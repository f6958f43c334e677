"""The timing harness: every engine timed the same way, in the same process, on the same inputs.

Honest timing here means: warm-up calls are never counted; each point runs for at least `min_iters` calls
*and* `min_duration_s` seconds, so a fast engine is not judged on three lucky calls; engines are measured
round-robin (`rounds` passes over all engines), so a burst of background load hits all of them rather than
one; on CUDA the device is synchronised around every timed call; and the spread (min/percentiles/max) is
reported next to the median so the noise is visible.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from project.config import dataclass_from_mapping
from project.deploy.hardware import Engine
from project.deploy.results import TimingPoint


@dataclass
class TimingSettings:
    """How long and how often each (engine, batch size) point is measured (`deploy.timing`)."""

    warmup_iters: int = 3
    min_iters: int = 5
    min_duration_s: float = 0.3
    max_iters: int = 10_000
    rounds: int = 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> TimingSettings:
        return dataclass_from_mapping(cls, values, "deploy.timing")


def synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def warm_up(engine: Engine, x: torch.Tensor, iters: int) -> None:
    """First calls allocate buffers, pick kernels, fill caches: run them, never time them."""
    for _ in range(max(1, iters)):
        engine(x)
    synchronize()


def time_calls(engine: Engine, x: torch.Tensor, min_iters: int, min_duration_s: float, max_iters: int) -> list[float]:
    """Seconds per call, one entry per call, until both the call count and the duration are reached."""
    samples: list[float] = []
    clock = time.perf_counter
    start = clock()
    while len(samples) < max_iters and (len(samples) < min_iters or clock() - start < min_duration_s):
        synchronize()
        t0 = clock()
        engine(x)
        synchronize()
        samples.append(clock() - t0)
    return samples


def timing_point(samples: Sequence[float], batch_size: int) -> TimingPoint:
    """Per-call seconds → latency percentiles (ms) and throughput (images/s) with its spread."""
    t = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return TimingPoint(
        iterations=int(t.size),
        measured_s=float(t.sum()),
        latency_ms={
            "min": float(t.min() * 1e3),
            "p50": float(p50 * 1e3),
            "p90": float(p90 * 1e3),
            "p99": float(p99 * 1e3),
            "max": float(t.max() * 1e3),
            "mean": float(t.mean() * 1e3),
        },
        # per-call throughput: the median call's, the slowest call's and the fastest call's
        throughput={
            "median": float(batch_size / p50),
            "min": float(batch_size / t.max()),
            "max": float(batch_size / t.min()),
        },
    )


def time_engines(
    engines: Mapping[str, Engine],
    inputs: Mapping[int, torch.Tensor],
    settings: TimingSettings,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, dict[int, TimingPoint]], dict[str, str]]:
    """Time every engine at every batch size, interleaved round by round. Returns name → batch → point,
    and name → error for an engine that raised (it is dropped; the others go on)."""
    samples: dict[str, dict[int, list[float]]] = {name: {bs: [] for bs in inputs} for name in engines}
    errors: dict[str, str] = {}
    rounds = max(1, settings.rounds)
    per_round_iters = -(-settings.min_iters // rounds)
    for r in range(rounds):
        for bs, x in inputs.items():
            if progress:
                progress(f"timing batch {bs}" + (f", round {r + 1}/{rounds}" if rounds > 1 else ""))
            for name, engine in engines.items():
                if name in errors:
                    continue
                try:
                    # full warm-up once; later rounds only re-touch caches another engine may have evicted
                    warm_up(engine, x, settings.warmup_iters if r == 0 else 1)
                    samples[name][bs] += time_calls(
                        engine,
                        x,
                        per_round_iters,
                        settings.min_duration_s / rounds,
                        max(1, settings.max_iters // rounds),
                    )
                except Exception as exc:  # one broken engine must not take the table down with it
                    errors[name] = f"{type(exc).__name__}: {exc}"
    results = {
        name: {bs: timing_point(s, bs) for bs, s in per_bs.items()}
        for name, per_bs in samples.items()
        if name not in errors
    }
    return results, errors


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux); 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class PeakMemory:
    """Peak memory while the block runs, above what the process held when it started: host RSS sampled
    every few ms on a side thread (the OS keeps only a lifetime peak), plus CUDA's own allocator peak."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.baseline = self.peak = 0
        self.cuda_peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = _rss_bytes()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        if self.baseline == 0:  # no /proc: the lifetime peak is the best there is
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_peak = torch.cuda.max_memory_allocated()

    def as_dict(self) -> dict[str, float | None]:
        mb = 1024 * 1024
        return {
            "host_peak_mb": round(self.peak / mb, 1),
            "host_increase_mb": round(max(0, self.peak - self.baseline) / mb, 1),
            "cuda_peak_mb": None if self.cuda_peak is None else round(self.cuda_peak / mb, 1),
        }
