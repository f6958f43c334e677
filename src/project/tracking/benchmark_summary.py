"""The three figures a leaderboard needs from a post-fit `benchmark.json`, read defensively.

The file belongs to the deploy step and its layout may change, so nothing here depends on one schema:
the chosen backend comes from a `chosen`/`chosen_backend`/`selected`/`backend` key, and measurements
are any mappings that name a batch size (by a `batch_size`-like field or by their key, e.g. "1",
"b64", "batch_256") with a p50/median latency and/or a throughput somewhere inside them. Missing
figures are None; a file that cannot be read gives all None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHOSEN_KEYS = ("chosen", "chosen_backend", "selected", "selected_backend", "best_backend", "backend", "engine")
BATCH_KEYS = ("batch_size", "batch", "bs")
BACKEND_KEYS = ("backend", "engine", "name")
_BATCH_NAME = re.compile(r"^(?:b|bs|batch|batch_size)?[_-]?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Measurement:
    backend: str | None
    batch_size: int
    latency_p50_ms: float | None
    throughput: float | None


@dataclass(frozen=True)
class BenchmarkSummary:
    backend: str | None = None
    latency_p50_ms: float | None = None  # the chosen backend at its smallest batch (batch 1 when measured)
    throughput: float | None = None  # images/s of the chosen backend at its largest batch
    batch_size_latency: int | None = None
    batch_size_throughput: int | None = None

    def as_row(self) -> dict[str, Any]:
        return {"backend": self.backend, "latency_p50_ms": self.latency_p50_ms, "throughput": self.throughput}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}/{key}".lower() if prefix else str(key).lower())
    else:
        yield prefix, node


def _latency_ms(record: Mapping[str, Any]) -> float | None:
    for path, value in _flatten(record):
        number = _number(value)
        if number is None or "throughput" in path or "per_s" in path:
            continue
        if re.search(r"(^|[/_])(p50|median)($|[/_])", path):
            in_seconds = re.search(r"(^|[/_])s($|[/_])|_s$|seconds", path) and "ms" not in path
            in_micro = "us" in re.split(r"[/_]", path)
            return number * 1000.0 if in_seconds else number / 1000.0 if in_micro else number
    return None


def _throughput(record: Mapping[str, Any]) -> float | None:
    for path, value in _flatten(record):
        number = _number(value)
        if number is not None and re.search(r"throughput|images_per_s|img_per_s|samples_per_s|per_sec|ips$", path):
            return number
    return None


def _batch_of(record: Mapping[str, Any], key: str | None) -> int | None:
    for name in BATCH_KEYS:
        value = record.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    match = _BATCH_NAME.match(str(key)) if key is not None else None
    return int(match.group(1)) if match else None


def measurements(node: Any, backend: str | None = None, key: str | None = None) -> Iterator[Measurement]:
    """Every (backend, batch size, latency, throughput) found anywhere in `node`."""
    if isinstance(node, list):
        for item in node:
            yield from measurements(item, backend, None)
        return
    if not isinstance(node, Mapping):
        return
    named = next((node[k] for k in BACKEND_KEYS if isinstance(node.get(k), str)), None)
    backend = named or backend
    batch = _batch_of(node, key)
    if batch is not None:
        latency, throughput = _latency_ms(node), _throughput(node)
        if latency is not None or throughput is not None:
            yield Measurement(backend, batch, latency, throughput)
            return
    for child_key, child in node.items():
        if isinstance(child, Mapping | list):
            # a mapping keyed by backend names: {"eager": {...}, "onnxruntime": {...}}
            child_backend = backend
            if isinstance(child, Mapping) and _batch_of(child, child_key) is None and child_key not in BATCH_KEYS:
                child_backend = child_key if key in ("backends", "engines", "results") else backend
            yield from measurements(child, child_backend, str(child_key))


def chosen_backend(doc: Mapping[str, Any]) -> str | None:
    for holder in (doc, doc.get("summary"), doc.get("choice"), doc.get("result")):
        if isinstance(holder, Mapping):
            for name in CHOSEN_KEYS:
                value = holder.get(name)
                if isinstance(value, str) and value:
                    return value
                if isinstance(value, Mapping) and isinstance(value.get("name"), str):
                    return value["name"]
    return None


def summarize(doc: Any) -> BenchmarkSummary:
    """The chosen backend, its smallest-batch p50 latency (ms) and its largest-batch throughput."""
    if not isinstance(doc, Mapping):
        return BenchmarkSummary()
    chosen = chosen_backend(doc)
    found = list(measurements(doc))
    mine = [m for m in found if chosen is not None and m.backend == chosen] or (
        found if len({m.backend for m in found}) <= 1 else []
    )
    if chosen is None and mine:
        chosen = mine[0].backend
    with_latency = sorted((m for m in mine if m.latency_p50_ms is not None), key=lambda m: m.batch_size)
    with_throughput = sorted((m for m in mine if m.throughput is not None), key=lambda m: -m.batch_size)
    latency = with_latency[0] if with_latency else None
    throughput = with_throughput[0] if with_throughput else None
    if latency is None:  # a flat summary: {"latency_p50_ms": ..., "throughput": ...}
        flat = _latency_ms(doc)
        return BenchmarkSummary(chosen, flat, throughput.throughput if throughput else _throughput(doc))
    return BenchmarkSummary(
        chosen,
        latency.latency_p50_ms,
        throughput.throughput if throughput else None,
        latency.batch_size,
        throughput.batch_size if throughput else None,
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
