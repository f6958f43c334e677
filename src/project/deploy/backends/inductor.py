"""TorchInductor ahead of time: `torch.export` (dynamic batch) → AOTInductor package (`model.pt2`) compiled
with freezing, the inference mode in which Inductor folds weights into the graph and, on CPU, pre-packs
convolution/linear weights for oneDNN. The engine benchmarked is the package that ships, loaded with
`torch._inductor.aoti_load_package`, not a JIT `torch.compile` that would only exist in this process.

Two details decide its speed on CPU: compile under `torch.no_grad()` (Inductor pre-packs weights only when
no gradient is wanted) and, for bf16, cast the weights themselves (`torch.export` does not record autocast).
A cold compile takes ~15-25 s on a small CPU; the package then loads in milliseconds."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from project.deploy.backends._util import batch_dim, export_example, quiet_export
from project.deploy.backends.base import Backend, BackendUnavailable, Engine

PACKAGE = "model.pt2"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class CastWrapper(nn.Module):
    """fp32 in, fp32 out, the network in `dtype` between: the engine contract for a low-precision graph."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


def native_low_precision(device: str, precision: str) -> str | None:
    """None when `device` computes `precision` in hardware, else why not (emulated bf16 is slower than fp32)."""
    if precision == "fp32":
        return None
    if device == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return "this GPU has no native bf16"
        return None
    if precision == "bf16" and not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return "this CPU has neither AVX-512-BF16 nor AMX: bf16 would be emulated, slower than fp32"
    if precision == "fp16" and not torch.cpu._is_amx_fp16_supported():
        return "this CPU has no AMX-FP16: fp16 would be emulated"
    return None


class AotInductorEngine:
    def __init__(self, package: Path, device: str) -> None:
        self.package = Path(package)
        self.device = torch.device(device)
        self.runner = torch._inductor.aoti_load_package(str(self.package))

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x.to(self.device, torch.float32).contiguous()).float().cpu()


class InductorBackend(Backend):
    kind = "inductor"

    def __init__(self, name: str | None = None, precision: str = "fp32", device: str | None = None) -> None:
        super().__init__(name=name, precision=precision, device=device)
        self._tmp: list[tempfile.TemporaryDirectory] = []

    def unavailable_reason(self) -> str | None:
        if self.precision not in DTYPES:
            return f"unknown precision {self.precision!r} (fp32, bf16 or fp16)"
        device = self.options.get("device") or "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        if device == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
            return "no C++ compiler on PATH (Inductor generates and compiles C++ for the CPU)"
        return native_low_precision(device, self.precision)

    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        if self.options.get("device") is None:
            self.options["device"] = next(net.parameters()).device.type
        reason = self.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        device = torch.device(self.options["device"])
        dtype = DTYPES[self.precision]
        model = copy.deepcopy(net).eval().to(device)
        model = CastWrapper(model.to(dtype), dtype).eval() if dtype != torch.float32 else model
        tmp = tempfile.TemporaryDirectory(prefix="aoti_")
        self._tmp.append(tmp)  # lives as long as the backend: the engine runs from this file until saved
        package = Path(tmp.name) / PACKAGE
        with torch.no_grad(), quiet_export():
            exported = torch.export.export(
                model, (export_example(example).to(device),), dynamic_shapes=({0: batch_dim()},)
            )
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(package), inductor_configs={"freezing": True}
            )
        return AotInductorEngine(package, self.options["device"])

    def save(self, engine: Engine, directory: Path) -> list[str]:
        assert isinstance(engine, AotInductorEngine)
        target = Path(directory) / PACKAGE
        if engine.package.resolve() != target.resolve():
            shutil.copyfile(engine.package, target)
        return [PACKAGE]

    def load(self, directory: Path, net: nn.Module) -> Engine:
        device = self.options.get("device") or "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("this package was compiled for CUDA and there is no CUDA device")
        reason = native_low_precision(device, self.precision)
        if reason:
            raise BackendUnavailable(reason)
        return AotInductorEngine(Path(directory) / PACKAGE, device)
