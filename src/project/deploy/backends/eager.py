"""Eager PyTorch as an engine: the fp32 reference every speedup is measured against, plus the cheap
eager variants (channels_last memory format, bf16 autocast)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from project.deploy.backends.base import Backend, BackendUnavailable, Engine


class EagerEngine:
    def __init__(self, net: nn.Module, precision: str = "fp32", channels_last: bool = False) -> None:
        self.net = net.eval()
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
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

    def __init__(self, name: str | None = None, precision: str = "fp32", channels_last: bool = False) -> None:
        super().__init__(name=name, precision=precision, channels_last=channels_last)
        if channels_last and name is None:
            self.name = f"{self.name}_channels_last"

    def unavailable_reason(self) -> str | None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            return f"unknown precision {self.precision!r} (fp32, bf16 or fp16)"
        return None

    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        return EagerEngine(net, self.precision, self.options["channels_last"])

    def save(self, engine: Engine, directory: Path) -> list[str]:
        return []  # the bundle's weights file is all it needs

    def load(self, directory: Path, net: nn.Module) -> Engine:
        return self.build(net, torch.empty(0), 0)
