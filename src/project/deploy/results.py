"""The post-fit run report, typed: what `benchmark.json` holds, and what `choose`, the renderers, the
leaderboard and the W&B table read. Plain Python (no torch), so readers stay cheap.

`to_json` writes the layout `benchmark.json` has always had (batch sizes as string keys, optional figures
left out when absent); `from_json` reads it back, and reads older or trimmed files too: a missing figure is
None, an unknown key is kept in `extra` and written back unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from project.atomic import atomic_write_text

FORMAT_VERSION = 1
T = TypeVar("T")


def _known(cls: type[T], doc: dict[str, Any], *skip: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `doc` into the dataclass's own fields (less `skip`, converted by the caller) and the rest."""
    names = {f.name for f in fields(cls)} - {"extra", *skip}
    return {k: v for k, v in doc.items() if k in names}, {k: v for k, v in doc.items() if k not in names}


def _drop_none(doc: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None or k in keep}


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


@dataclass
class TimingPoint:
    """One engine at one batch size: per-call latency percentiles (ms) and throughput (images/s)."""

    iterations: int = 0
    measured_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # min, p50, p90, p99, max, mean
    throughput: dict[str, float] = field(default_factory=dict)  # median, min, max
    speedup: float | None = None  # over the baseline's p50 at the same batch size

    @property
    def p50_ms(self) -> float | None:
        return self.latency_ms.get("p50")

    @property
    def images_per_s(self) -> float | None:
        return self.throughput.get("median")

    def to_json(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "measured_s": self.measured_s,
            "latency_ms": dict(self.latency_ms),
            "throughput": dict(self.throughput),
            "speedup": self.speedup,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TimingPoint:
        own, _ = _known(cls, _mapping(doc))
        own["latency_ms"] = _mapping(own.get("latency_ms"))
        own["throughput"] = _mapping(own.get("throughput"))
        return cls(**own)


@dataclass
class ParityResult:
    """An engine's logits against the baseline's on the same images, and whether they are within tolerance."""

    passed: bool = False
    reason: str | None = None
    samples: int | None = None
    top1_agreement: float | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    logit_bound: float | None = None
    reference_acc: float | None = None
    acc: float | None = None
    acc_delta: float | None = None  # accuracy points against the baseline
    tolerance: dict[str, float] | None = None
    data: str | None = None  # where the images came from
    # the same engine at each batch size a bundle may run (the timed sizes): agreement and logits against
    # the baseline on a sample of the images at that size; the engine passes only if every one passes
    by_batch_size: dict[int, ParityResult] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        """False when the comparison stopped before any figure (wrong shape, non-finite logits)."""
        return self.top1_agreement is not None

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "by_batch_size"}
        doc["passed"], doc["reason"], doc["data"] = doc.pop("passed"), doc.pop("reason"), doc.pop("data")
        doc["batch_sizes"] = {str(bs): r.to_json() for bs, r in self.by_batch_size.items()} or None
        return _drop_none(doc, keep=("passed", "reason"))

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ParityResult:
        own, extra = _known(cls, _mapping(doc), "by_batch_size")
        sizes = _mapping(extra.get("batch_sizes"))
        by_size = {int(bs): cls.from_json(r) for bs, r in sizes.items() if str(bs).isdigit() and isinstance(r, dict)}
        return cls(**own, by_batch_size=dict(sorted(by_size.items())))


@dataclass
class EngineResult:
    """One engine of the run: how it was built, whether it passed parity, how fast it ran per batch size.
    `status`: ok | parity_failed | unavailable | failed (with `reason`)."""

    kind: str = ""
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)
    status: str = "failed"
    reason: str | None = None
    build_s: float | None = None
    roundtrip_s: float | None = None  # save + load of the shipped files
    files: list[str] | None = None
    files_mb: float | None = None
    file_bytes: int | None = None  # size on disk of `files`
    calibration_samples: int | None = None  # quantised engines: images used to calibrate
    calibration_s: float | None = None
    parity: ParityResult | None = None
    memory: dict[str, float | None] | None = None  # host_peak_mb, host_increase_mb, cuda_peak_mb
    points: dict[int, TimingPoint] = field(default_factory=dict)  # by batch size; "batches" in JSON
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "ok"

    def bare_point(self, batch_size: int) -> TimingPoint | None:
        """The library's own session at `batch_size` (`deploy.bare`, see project.deploy.overhead)."""
        doc = _mapping(self.extra.get("bare")).get(str(batch_size))
        return TimingPoint.from_json(doc) if isinstance(doc, dict) else None

    def point(self, batch_size: int) -> TimingPoint | None:
        return self.points.get(batch_size)

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("points", "extra")}
        doc["options"] = dict(self.options)
        doc["parity"] = self.parity.to_json() if self.parity is not None else None
        doc["batches"] = {str(bs): p.to_json() for bs, p in self.points.items()} or None
        return {**_drop_none(doc, keep=("kind", "precision", "options", "status", "reason")), **self.extra}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EngineResult:
        own, extra = _known(cls, _mapping(doc), "points")
        batches = _mapping(extra.pop("batches", None))
        own["options"] = _mapping(own.get("options"))
        if isinstance(own.get("parity"), dict):
            own["parity"] = ParityResult.from_json(own["parity"])
        else:
            own.pop("parity", None)
        points = {int(bs): TimingPoint.from_json(p) for bs, p in batches.items() if str(bs).isdigit()}
        return cls(**own, points=dict(sorted(points.items())), extra=extra)


@dataclass(frozen=True)
class Headline:
    """The figures a leaderboard row shows: the chosen engine, its p50 latency at the smallest batch and
    its median throughput at the largest. None where a figure is missing."""

    backend: str | None = None
    latency_p50_ms: float | None = None
    throughput: float | None = None
    batch_size_latency: int | None = None
    batch_size_throughput: int | None = None
    precision: str | None = None  # of the chosen engine (int8 engines ship smaller files, lower accuracy)
    acc_delta: float | None = None  # its test accuracy against eager fp32, points
    file_mb: float | None = None  # its files on disk

    def as_row(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "latency_p50_ms": self.latency_p50_ms,
            "throughput": self.throughput,
            "precision": self.precision,
            "acc_delta": self.acc_delta,
            "file_mb": self.file_mb,
        }


@dataclass
class BenchmarkReport:
    """The whole post-fit run: the model, the machine, the settings, every engine, and the choice made."""

    format: int = FORMAT_VERSION
    created: str | None = None
    checkpoint: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # name, target, parameters, input_shape
    machine: dict[str, Any] = field(default_factory=dict)  # see project.deploy.hardware.machine_info
    settings: dict[str, Any] = field(default_factory=dict)  # what the run was measured with
    parity_data: dict[str, Any] = field(default_factory=dict)  # source, samples
    baseline: str | None = None  # the engine every speedup is relative to, and the parity reference
    engines: dict[str, EngineResult] = field(default_factory=dict)  # by name; "backends" in JSON
    chosen: str | None = None
    chosen_reason: str | None = None
    ranking: list[str] = field(default_factory=list)  # engines that passed, best first
    bundle: dict[str, Any] | None = None  # {path, engines} or {error}
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_sizes(self) -> list[int]:
        sizes = self.settings.get("batch_sizes")
        if sizes:
            return [int(b) for b in sizes]
        return sorted({bs for e in self.engines.values() for bs in e.points})

    @property
    def timed(self) -> dict[str, EngineResult]:
        """The engines that have timing figures."""
        return {n: e for n, e in self.engines.items() if e.points}

    def headline(self) -> Headline:
        engine = self.engines.get(self.chosen) if isinstance(self.chosen, str) else None
        if engine is None or not engine.points:
            return Headline(self.chosen if isinstance(self.chosen, str) else None)
        small, large = min(engine.points), max(engine.points)
        latency, throughput = engine.points[small].p50_ms, engine.points[large].images_per_s
        return Headline(
            self.chosen,
            float(latency) if isinstance(latency, int | float) else None,
            float(throughput) if isinstance(throughput, int | float) else None,
            small,
            large,
            engine.precision,
            engine.parity.acc_delta if engine.parity is not None else None,
            engine.files_mb,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "engines":
                doc["backends"] = {name: e.to_json() for name, e in value.items()}
            elif f.name != "extra" and (value is not None or f.name != "bundle"):
                doc[f.name] = value
        return {**doc, **self.extra}

    @classmethod
    def from_json(cls, doc: Any) -> BenchmarkReport:
        """A parsed `benchmark.json` → the report. Raises ValueError when `doc` is not a report at all."""
        if not isinstance(doc, dict):
            raise ValueError(f"a benchmark report is a JSON object, not {type(doc).__name__}")
        own, extra = _known(cls, doc, "engines")
        engines = _mapping(extra.pop("backends", None))
        for key in ("model", "machine", "settings", "parity_data"):
            own[key] = _mapping(own.get(key))
        own["ranking"] = [str(n) for n in own.get("ranking") or []]
        return cls(**own, engines={str(n): EngineResult.from_json(e) for n, e in engines.items()}, extra=extra)

    def write(self, path: Path) -> Path:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")  # never half a report
        return path

    @classmethod
    def read(cls, path: str | Path) -> BenchmarkReport:
        """Raises OSError or ValueError when the file is missing or not a report."""
        return cls.from_json(json.loads(Path(path).read_text()))
