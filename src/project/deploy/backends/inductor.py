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
from typing import Any

import torch
from torch import nn

from project.deploy.backends._util import batch_dim, dense, export_example, quiet_export
from project.deploy.backends.base import Backend
from project.deploy.hardware import DTYPES, FLOAT_PRECISIONS, Engine, native_precision_reason

PACKAGE = "model.pt2"


class CastWrapper(nn.Module):
    """fp32 in, fp32 out, the network in `dtype` between: the engine contract for a low-precision graph."""

    def __init__(self, net: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


class AotInductorEngine:
    def __init__(self, package: Path, device: str) -> None:
        self.package = Path(package)
        self.device = torch.device(device)
        self.runner = torch._inductor.aoti_load_package(str(self.package))

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # exactly the strides the package was compiled for: see `dense`
        return self.runner(dense(x.to(self.device, torch.float32))).float().cpu()


class InductorBackend(Backend):
    kind = "inductor"
    # int8: PT2E with X86InductorQuantizer, CPU only (project.deploy.quantize.inductor_int8)
    precisions = (*FLOAT_PRECISIONS, "int8")
    runs_on_device = True
    # `aoti_load_package` dlopens the package's compiled shared library (int8: one per static batch size)
    loads_native_code = True
    native_code = "a compiled library, loading it runs its code"

    def __init__(self, name: str | None = None, precision: str = "fp32", device: str | None = None) -> None:
        super().__init__(name=name, precision=precision, device=device)
        self._tmp: list[tempfile.TemporaryDirectory] = []

    def _device(self) -> str:
        return self.options.get("device") or "cpu"

    def resolve_options(self, net: nn.Module) -> dict[str, Any]:
        """The device defaults to the one the network is on (the run's device)."""
        return {**self.options, "device": self.options.get("device") or next(net.parameters()).device.type}

    def _unavailable_reason(self) -> str | None:
        device = self._device()
        if device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        if device == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
            return "no C++ compiler on PATH (Inductor generates and compiles C++ for the CPU)"
        if self.quantized:
            from project.deploy.quantize.inductor_int8 import pt2e_unavailable_reason

            return "PT2E int8 runs on the CPU only" if device != "cpu" else pt2e_unavailable_reason()
        return native_precision_reason(device, self.precision)

    def load_unavailable_reason(self) -> str | None:
        """Loading a package needs no compiler; only the device and its native precision."""
        if self._device() == "cuda" and not torch.cuda.is_available():
            return "this package was compiled for CUDA and there is no CUDA device"
        return native_precision_reason(self._device(), self.precision)

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        if self.quantized:
            return self._build_int8(net, example, max_batch_size)
        device = torch.device(self.resolve_options(net)["device"])
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
        return AotInductorEngine(package, device.type)

    def _build_int8(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        """Static-batch packages for batch 1 and the largest batch (see `compile_static_packages`)."""
        from project.deploy.quantize.inductor_int8 import StaticBatchEngine, compile_static_packages, quantize_pt2e

        data = self.quantization
        converted, self.calibration_stats = data.timed(quantize_pt2e, net.cpu(), data.calibration)
        tmp = tempfile.TemporaryDirectory(prefix="aoti_int8_")
        self._tmp.append(tmp)
        return StaticBatchEngine(compile_static_packages(converted, example.cpu(), [1, max_batch_size], tmp.name))

    def save(self, engine: Engine, directory: Path) -> list[str]:
        if hasattr(engine, "packages"):  # int8: one package per static batch size
            for package in engine.packages.values():
                if package.resolve() != (Path(directory) / package.name).resolve():
                    shutil.copyfile(package, Path(directory) / package.name)
            return [p.name for p in engine.packages.values()]
        assert isinstance(engine, AotInductorEngine)
        target = Path(directory) / PACKAGE
        if engine.package.resolve() != target.resolve():
            shutil.copyfile(engine.package, target)
        return [PACKAGE]

    def bare(self, directory: Path, net: nn.Module, threads: int | None = None) -> Engine:
        runner = torch._inductor.aoti_load_package(str(Path(directory) / PACKAGE))
        return torch.inference_mode()(runner)

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        if self.quantized:
            from project.deploy.quantize.inductor_int8 import StaticBatchEngine, package_sizes

            return StaticBatchEngine(package_sizes(directory))
        return AotInductorEngine(directory / PACKAGE, self._device())
