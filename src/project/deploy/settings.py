"""The `deploy` config group as a structured config: one dataclass, validated when it is built (an unknown
key is an error, not silently ignored), shared by the training callback and `python -m project.benchmark`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from project.config import plain
from project.deploy.parity import GATED_PRECISIONS, Tolerance, tolerances_from_config
from project.deploy.quantize.calibration import Int8Settings
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
    bare: bool = False  # also time each library's own session on the saved files (needs roundtrip)
    isolate: bool = True  # the training callback runs the step in a fresh process (see deploy/post_fit.py)
    timing: TimingSettings = field(default_factory=TimingSettings)
    parity_max_samples: int | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: tolerances_from_config(None))
    int8: Int8Settings = field(default_factory=Int8Settings)  # calibration of quantized engines
    # engines within this fraction of the fastest count as tied: the most accurate, then the higher
    # precision, ships (so an int8 engine wins only when it is clearly faster)
    tie_margin: float = 0.05
    bundle: bool = True
    fallbacks: int = 1
    plot: bool = True
    strict: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> DeploySettings:
        """The `deploy` mapping (as composed by Hydra) → settings; ValueError naming a bad key or value."""
        values = dict(plain(config) or {})
        parity = dict(values.pop("parity", None) or {})
        known = {f.name for f in fields(cls)} - {"tolerances", "parity_max_samples"}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown deploy keys {sorted(unknown)}; known: {sorted(known | {'parity'})}")
        settings = cls(**{k: v for k, v in values.items() if k not in ("timing", "int8")})
        settings.timing = TimingSettings.from_mapping(values.get("timing"))
        settings.int8 = Int8Settings.from_mapping(values.get("int8"))
        settings.parity_max_samples = parity.pop("max_samples", None)
        tolerances = dict(parity.pop("tolerances", None) or {})
        for precision in GATED_PRECISIONS:  # deploy.parity.int8.* is the int8 gate
            if parity.get(precision):
                tolerances[precision] = {**tolerances.get(precision, {}), **parity.pop(precision)}
            parity.pop(precision, None)
        settings.tolerances = tolerances_from_config(tolerances)
        if parity:
            known_parity = ["max_samples", "tolerances", *GATED_PRECISIONS]
            raise ValueError(f"unknown deploy.parity keys {sorted(parity)}; known: {known_parity}")
        settings.batch_sizes = sorted({int(b) for b in settings.batch_sizes})
        if not settings.batch_sizes or settings.batch_sizes[0] < 1:
            raise ValueError(f"deploy.batch_sizes must be positive integers, got {settings.batch_sizes}")
        if settings.objective not in OBJECTIVES:
            raise ValueError(f"deploy.objective={settings.objective!r}: expected one of {OBJECTIVES}")
        return settings

    @property
    def wants_quantization(self) -> bool:
        """True when a configured engine is int8/fp8: calibration images must be drawn for it."""
        from project.deploy.backends import parse_backend

        return any(parse_backend(entry).quantized for entry in self.backends)

    def to_config(self) -> dict[str, Any]:
        """The `deploy` mapping `from_config` turns back into these settings (JSON-safe)."""
        values = asdict(self)
        parity = {"max_samples": values.pop("parity_max_samples"), "tolerances": values.pop("tolerances")}
        return {**values, "parity": parity}

    def as_report(self, threads: int, device: str) -> dict[str, Any]:
        """The settings a benchmark report records (what the figures were measured with)."""
        return {
            "backend": self.backend,
            "objective": self.objective,
            "batch_sizes": self.batch_sizes,
            "threads": threads,
            "device": device,
            "roundtrip": self.roundtrip,
            "bare": self.bare and self.roundtrip,
            "timing": vars(self.timing).copy(),
            "tolerances": {k: vars(v).copy() for k, v in self.tolerances.items()},
            "int8": vars(self.int8).copy(),
            "tie_margin": self.tie_margin,
        }
