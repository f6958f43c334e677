"""The figures a leaderboard row needs from a post-fit `benchmark.json` (written by `project.deploy.report`):
the chosen engine, its p50 latency at the smallest batch and its median throughput at the largest.
Missing figures are None; a file that cannot be read gives all None."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BenchmarkSummary:
    backend: str | None = None
    latency_p50_ms: float | None = None  # the chosen engine at its smallest batch (batch 1 when measured)
    throughput: float | None = None  # images/s of the chosen engine at its largest batch
    batch_size_latency: int | None = None
    batch_size_throughput: int | None = None

    def as_row(self) -> dict[str, Any]:
        return {"backend": self.backend, "latency_p50_ms": self.latency_p50_ms, "throughput": self.throughput}


def _figure(node: Any, *path: str) -> float | None:
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def summarize(doc: Any) -> BenchmarkSummary:
    """`benchmark.json` → the chosen engine's batch-1 (smallest batch) p50 latency and largest-batch throughput."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("chosen"), str):
        return BenchmarkSummary()
    chosen = doc["chosen"]
    engine = (doc.get("backends") or {}).get(chosen)
    batches = engine.get("batches") if isinstance(engine, Mapping) else None
    sizes = sorted(int(b) for b in batches if str(b).isdigit()) if isinstance(batches, Mapping) else []
    if not sizes:
        return BenchmarkSummary(chosen)
    small, large = sizes[0], sizes[-1]
    return BenchmarkSummary(
        chosen,
        _figure(batches[str(small)], "latency_ms", "p50"),
        _figure(batches[str(large)], "throughput", "median"),
        small,
        large,
    )


def read_benchmark(path: str | Path) -> BenchmarkSummary | None:
    """`summarize` of the file, None when there is no file, all-None figures when it is unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return summarize(json.loads(path.read_text()))
    except (OSError, ValueError):
        return BenchmarkSummary()
