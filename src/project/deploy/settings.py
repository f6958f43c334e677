"""The `deploy` config group as a structured config: one dataclass, validated when it is built (an unknown
key is an error, not silently ignored), shared by the training callback and `python -m project.benchmark`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from project.config import plain
from project.deploy.parity import Tolerance, tolerances_from_config
from project.deploy.timing import TimingSettings

OBJECTIVES = ("latency", "throughput")


@dataclass
class DeploySettings:
    """What the post-fit step builds, checks, times and ships (see conf/deploy/default.yaml)."""

    enabled: bool = True
    backend: str = "auto"  # auto: the fastest engine that passed parity; or one engine's name
    objective: str = "latency"  # latency: p50 at the smallest batch; throughput: images/s at the largest
    backends: list[Any] = field(default_factory=lambda: ["eager", "onnxruntime", "openvino", "openvino_bf16"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32, 256])
    threads: int | None = None  # every engine's thread count; None: torch's default
    device: str = "auto"  # where device-bound backends build: auto | cpu | cuda
    roundtrip: bool = True  # save and load each engine before it is checked and timed
    timing: TimingSettings = field(default_factory=TimingSettings)
    parity_max_samples: int | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: tolerances_from_config(None))
    bundle: bool = True
    fallbacks: int = 1
    plot: bool = True
    strict: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> DeploySettings:
        """The `deploy` mapping (as composed by Hydra) → settings; ValueError naming a bad key or value."""
        values = dict(plain(config) or {})
        parity = dict(values.pop("parity", None) or {})
        known = {f.name for f in fields(cls)} - {"timing", "tolerances", "parity_max_samples"}
        unknown = set(values) - known - {"timing"}
        if unknown:
            raise ValueError(f"unknown deploy keys {sorted(unknown)}; known: {sorted(known | {'timing', 'parity'})}")
        settings = cls(**{k: v for k, v in values.items() if k != "timing"})
        settings.timing = TimingSettings.from_mapping(values.get("timing"))
        settings.parity_max_samples = parity.pop("max_samples", None)
        settings.tolerances = tolerances_from_config(parity.pop("tolerances", None))
        if parity:
            raise ValueError(f"unknown deploy.parity keys {sorted(parity)}; known: ['max_samples', 'tolerances']")
        settings.batch_sizes = sorted({int(b) for b in settings.batch_sizes})
        if not settings.batch_sizes or settings.batch_sizes[0] < 1:
            raise ValueError(f"deploy.batch_sizes must be positive integers, got {settings.batch_sizes}")
        if settings.objective not in OBJECTIVES:
            raise ValueError(f"deploy.objective={settings.objective!r}: expected one of {OBJECTIVES}")
        return settings

    def as_report(self, threads: int, device: str) -> dict[str, Any]:
        """The settings a benchmark report records (what the figures were measured with)."""
        return {
            "backend": self.backend,
            "objective": self.objective,
            "batch_sizes": self.batch_sizes,
            "threads": threads,
            "device": device,
            "roundtrip": self.roundtrip,
            "timing": vars(self.timing).copy(),
            "tolerances": {k: vars(v).copy() for k, v in self.tolerances.items()},
        }
