"""The one face every inference backend shows, so parity, timing, bundle and predictor never branch
on which engine they hold.

An *engine* is a callable: normalised float32 N×C×H×W batch (CPU tensor) → float32 logits (CPU tensor).
A *backend* builds an engine from the eager network, saves it to a folder, and loads it back.

A backend class declares what the callers need to know as class attributes (`kind`, `precisions`,
`runs_on_device`, `libraries`, `loads_native_code`) and implements `_build`, `save` and `_load`; the public
`build` and `load` check availability once, then call those.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from project.deploy.hardware import QUANTIZED_PRECISIONS, Engine
from project.deploy.quantize.calibration import CalibrationStats, QuantizationData


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (library missing, no CUDA, CPU lacks the instruction set)."""


class Backend(ABC):
    """Builds, saves and loads one kind of engine. `name` is unique within a run (e.g. `openvino_bf16`)."""

    kind: ClassVar[str]
    # the precisions this backend can build (`kind_<precision>` in a config name); others are unavailable
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    # True: `build` gets the network on the run's device (cuda when there is one); False: on the CPU
    runs_on_device: ClassVar[bool] = False
    # distributions whose versions a report and a bundle record (the inference libraries it runs on)
    libraries: ClassVar[tuple[str, ...]] = ()
    # True: loading the saved files runs code from them (a compiled library is dlopened), so a bundle loads
    # this engine only with trust_native_code=true; `native_code` says what the files are, for that refusal
    loads_native_code: ClassVar[bool] = False
    native_code: ClassVar[str] = ""
    # True for the engine every speedup is measured against and every parity check compares with
    is_baseline: bool = False

    def __init__(self, name: str | None = None, precision: str = "fp32", **options: Any) -> None:
        self.name = name or (self.kind if precision == "fp32" else f"{self.kind}_{precision}")
        self.precision = precision
        self.options = options
        # quantized precisions only: the images to calibrate on (set by the pipeline before `build`), and
        # how many were used and for how long (set by `build`, for the report)
        self.quantization: QuantizationData | None = None
        self.calibration_stats: CalibrationStats | None = None

    @property
    def quantized(self) -> bool:
        """True for int8/fp8 engines: `build` needs `quantization` (calibration images); loading does not."""
        return self.precision in QUANTIZED_PRECISIONS

    @property
    def spec(self) -> dict[str, Any]:
        """What a bundle records to rebuild this backend: `backend_from_spec(spec)` inverts it."""
        return {
            "kind": self.kind,
            "name": self.name,
            "precision": self.precision,
            "options": dict(self.options),
        }

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch the built engine accepts, where it was built for a fixed maximum (recorded in
        its options, so a bundle knows it); None: any batch size runs."""
        value = self.options.get("max_batch_size")
        return int(value) if value else None

    def resolve_options(self, net: nn.Module) -> dict[str, Any]:
        """The options with every default this network decides filled in (e.g. the device it runs on)."""
        return dict(self.options)

    def resolved(self, net: nn.Module) -> Backend:
        """A copy of this backend with `resolve_options(net)`: what a bundle records to load it again."""
        clone = copy.copy(self)
        clone.options = self.resolve_options(net)
        return clone

    def unavailable_reason(self) -> str | None:
        """None when the backend can build on this machine, else the reason it cannot."""
        if self.precision not in self.precisions:
            return f"{self.kind} does not build precision {self.precision!r} (it builds {', '.join(self.precisions)})"
        return self._unavailable_reason()

    def _unavailable_reason(self) -> str | None:
        """A backend's own checks (library installed, options valid, hardware present)."""
        return None

    def load_unavailable_reason(self) -> str | None:
        """None when saved files can be loaded here; by default the same checks as for building."""
        return self.unavailable_reason()

    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None = None) -> Engine:
        """Compile `net` (eval mode, fp32; on the run's device when `runs_on_device`, else on the CPU) into
        an engine. `example` is one normalised batch; `threads` pins the engine's thread pool (None: the
        library's default). Raises `BackendUnavailable` when it cannot run here."""
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        if self.quantized and self.quantization is None:
            raise BackendUnavailable(
                f"{self.precision} engines calibrate on training images and none were given "
                "(the run has no data set: pass data=NAME, or random_weights=true for synthetic data)"
            )
        return self._build(net, example, max_batch_size, threads)

    def load(self, directory: Path, net: nn.Module, threads: int | None = None) -> Engine:
        """Load what `save` wrote. `net` is the eager fp32 network, for backends that wrap it."""
        reason = self.load_unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        return self._load(Path(directory), net, threads)

    def bare(self, directory: Path, net: nn.Module, threads: int | None = None) -> Engine | None:
        """The library's own session on the saved files, built as its documentation shows (its defaults,
        the same thread count), with nothing of this project around the call: timed beside the engine, it
        makes the wrapper's overhead visible. None where there is no such session (TensorRT)."""
        return None

    @abstractmethod
    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        """Build the engine; availability is already checked."""

    @abstractmethod
    def save(self, engine: Engine, directory: Path) -> list[str]:
        """Write the engine's files into `directory`; return their names relative to it."""

    @abstractmethod
    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        """Load the engine; availability is already checked."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, precision={self.precision!r}, options={self.options})"
