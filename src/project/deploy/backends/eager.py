"""Eager PyTorch as an engine: the fp32 reference every speedup is measured against, plus the cheap
eager variants (channels_last memory format, bf16 autocast)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from project.deploy.backends.base import Backend
from project.deploy.hardware import DTYPES, FLOAT_PRECISIONS, Engine


class EagerEngine:
    def __init__(self, net: nn.Module, precision: str = "fp32", channels_last: bool = False) -> None:
        self.net = net.eval()
        self.dtype = None if precision == "fp32" else DTYPES[precision]
        self.channels_last = channels_last
        self.device = next(net.parameters()).device
        if channels_last:  # on a copy: the caller's net (e.g. a bundle's shared eager net) stays as it was
            self.net = copy.deepcopy(self.net).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.net(x).float().cpu()
        with torch.autocast(self.device.type, dtype=self.dtype):
            return self.net(x).float().cpu()


class EagerBackend(Backend):
    kind = "eager"
    precisions = FLOAT_PRECISIONS
    runs_on_device = True

    def __init__(self, name: str | None = None, precision: str = "fp32", channels_last: bool = False) -> None:
        super().__init__(name=name, precision=precision, channels_last=channels_last)
        if channels_last and name is None:
            self.name = f"{self.name}_channels_last"

    @property
    def is_baseline(self) -> bool:  # type: ignore[override]
        """Plain eager fp32: the reference every other engine is compared with."""
        return self.precision == "fp32" and not self.options["channels_last"]

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        # eager PyTorch has one process-wide thread pool: `torch.set_num_threads` sizes it, not the engine
        return EagerEngine(net, self.precision, self.options["channels_last"])

    def save(self, engine: Engine, directory: Path) -> list[str]:
        return []  # the bundle's weights file is all it needs

    def bare(self, directory: Path, net: nn.Module, threads: int | None = None) -> Engine | None:
        if self.precision != "fp32" or self.options["channels_last"]:
            return None  # the variants are this project's recipes, not a library default
        net = net.eval()
        return torch.inference_mode()(net.__call__)

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        return EagerEngine(net, self.precision, self.options["channels_last"])
