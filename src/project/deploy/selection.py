"""Which engines run, and which one ships: the configured backends (baseline first), the fastest engine
that passed parity for the objective, and the bundle's fallback order."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from project.deploy.backends import Backend, baseline_backend, parse_backend
from project.deploy.results import BenchmarkReport


def backend_list(entries: Iterable[Any]) -> list[Backend]:
    """Parse `deploy.backends`, the baseline (eager fp32) first and added when missing, names unique."""
    backends = [parse_backend(e) for e in entries]
    if not any(b.is_baseline for b in backends):
        backends.insert(0, baseline_backend())
    backends.sort(key=lambda b: not b.is_baseline)
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"deploy.backends names must be unique; repeated: {duplicates}")
    return backends


def choose(report: BenchmarkReport, objective: str, wanted: str = "auto") -> tuple[str | None, str, list[str]]:
    """The fastest engine that passed parity for the objective → (name, why, all passing in speed order).
    `latency`: lowest median time at the smallest batch; `throughput`: most images/s at the largest."""
    sizes = report.batch_sizes
    bs = sizes[0] if objective == "latency" else sizes[-1]

    def score(name: str) -> float:
        point = report.engines[name].points[bs]
        return point.p50_ms if objective == "latency" else -point.images_per_s

    passing = [n for n, e in report.engines.items() if e.passed and e.points]
    ranked = sorted(passing, key=score)
    if not ranked:
        return None, "no engine passed parity and benchmarking", []
    best = ranked[0]
    point = report.engines[best].points[bs]
    figure = (
        f"{point.p50_ms:.3f} ms p50 at batch {bs}"
        if objective == "latency"
        else f"{point.images_per_s:,.0f} img/s at batch {bs}"
    )
    speedup = f", {point.speedup:.2f}× eager fp32" if point.speedup else ""
    why = f"fastest engine that passed parity for {objective}: {figure}{speedup}"
    if wanted != "auto":
        if wanted in passing:
            ranked.remove(wanted)
            ranked.insert(0, wanted)
            return wanted, f"requested (deploy.backend={wanted}); the fastest passing was {best}", ranked
        why = f"deploy.backend={wanted} is not an engine that passed parity here; auto: {why}"
    return best, why, ranked


def bundle_order(report: BenchmarkReport, ranked: list[str], fallbacks: int) -> list[str]:
    """The chosen engine, then up to `fallbacks` more passing engines, fastest first, each of a kind not
    yet in the list (a different runtime is what helps where the first cannot load) and never of the
    baseline's kind: the bundle falls back to the baseline by itself, from its weights file."""
    order = ranked[:1]
    kinds = {report.engines[n].kind for n in order}
    if report.baseline in report.engines:
        kinds.add(report.engines[report.baseline].kind)
    for name in ranked[1:]:
        if len(order) > fallbacks:
            break
        kind = report.engines[name].kind
        if kind not in kinds:
            order.append(name)
            kinds.add(kind)
    return order
