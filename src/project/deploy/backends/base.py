"""The one face every inference backend shows, so parity, benchmark, bundle and predictor never branch
on which engine they hold.

An *engine* is a callable: normalised float32 N×C×H×W batch (CPU tensor) → float32 logits (CPU tensor).
A *backend* builds an engine from the eager network, saves it to a folder, and loads it back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

Engine = Callable[[torch.Tensor], torch.Tensor]


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (library missing, no CUDA, CPU lacks the instruction set)."""


class Backend(ABC):
    """Builds, saves and loads one kind of engine. `name` is unique within a run (e.g. `openvino_bf16`)."""

    kind: ClassVar[str]
    # Runtime only, never part of `spec`: the benchmark pins every engine to the same thread count for a
    # fair comparison, while a bundle loaded on another machine should use that machine's default.
    threads: int | None = None

    def __init__(self, name: str | None = None, precision: str = "fp32", **options: Any) -> None:
        self.name = name or (self.kind if precision == "fp32" else f"{self.kind}_{precision}")
        self.precision = precision
        self.options = options

    @property
    def spec(self) -> dict[str, Any]:
        """What a bundle records to rebuild this backend: `backend_from_spec(spec)` inverts it."""
        return {
            "kind": self.kind,
            "name": self.name,
            "precision": self.precision,
            "options": dict(self.options),
        }

    def unavailable_reason(self) -> str | None:
        """None when the backend can run on this machine, else the reason it cannot."""
        return None

    @abstractmethod
    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        """Compile `net` (eval mode, fp32, CPU) into an engine; `example` is one normalised batch."""

    @abstractmethod
    def save(self, engine: Engine, directory: Path) -> list[str]:
        """Write the engine's files into `directory`; return their names relative to it."""

    @abstractmethod
    def load(self, directory: Path, net: nn.Module) -> Engine:
        """Load what `save` wrote. `net` is the eager fp32 network, for backends that wrap it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, precision={self.precision!r}, options={self.options})"
