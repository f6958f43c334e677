"""Torch-TensorRT ahead of time (NVIDIA GPUs): `torch_tensorrt.compile(ir="dynamo")` over a batch range
`Input(min_shape, opt_shape, max_shape)`, so every batch up to the largest benchmarked one (a partial last
batch included) runs on one engine; saved with `torch_tensorrt.save` as an ExportedProgram (`model.ep`).

Precision follows the model and input dtype (explicit typing): the network is cast to fp16/bf16 and the
input spec carries that dtype; the `enabled_precisions` knob is deprecated in the dynamo path of the 2.x
releases this project pins. Install with `pip install .[tensorrt]`. Written from the Torch-TensorRT 2.x
documentation; it cannot run on a CPU-only machine, where it reports itself unavailable."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from project.deploy.backends._util import dense
from project.deploy.backends.base import Backend
from project.deploy.hardware import DTYPES, FLOAT_PRECISIONS, Engine, native_precision_reason

PROGRAM = "model.ep"


class TensorRtEngine:
    def __init__(
        self, module: Any, dtype: torch.dtype, inputs: list[Any] | None = None, path: Path | None = None
    ) -> None:
        self.module, self.dtype = module, dtype
        self.inputs = inputs  # the Input specs `torch_tensorrt.save` re-traces with (a fresh build)
        self.path = path  # the file it was loaded from (a loaded engine is saved by copying it)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(dense(x.to("cuda", self.dtype, non_blocking=True)))  # the compiled strides
        return out.float().cpu()  # .cpu() waits for the GPU: the call's time is the whole round trip


class TensorRtBackend(Backend):
    kind = "tensorrt"
    # int8 / fp8: NVIDIA ModelOpt Q/DQ, calibrated, then compiled (project.deploy.quantize.tensorrt_int8)
    precisions = (*FLOAT_PRECISIONS, "int8", "fp8")
    libraries = ("torch-tensorrt", "tensorrt", "nvidia-modelopt")
    # `torch_tensorrt.load` is `torch.export.load`, which unpickles an archive's pickled weights and
    # constants with weights_only=False: the file decides what runs (no engine_host_code_allowed is set)
    loads_native_code = True
    native_code = "an exported program torch unpickles, loading it can run its code"

    def __init__(
        self,
        name: str | None = None,
        precision: str = "fp32",
        min_block_size: int = 1,
        max_batch_size: int | None = None,
    ) -> None:
        # max_batch_size: the engine's fixed maximum (the optimisation profile's max_shape); set by `_build`
        # to the largest batch it was built for, so the bundle records it and a server never exceeds it
        super().__init__(name=name, precision=precision, min_block_size=min_block_size, max_batch_size=max_batch_size)

    def _unavailable_reason(self) -> str | None:
        if not torch.cuda.is_available():
            return "no CUDA device (TensorRT runs on NVIDIA GPUs only)"
        if importlib.util.find_spec("torch_tensorrt") is None:
            return "torch-tensorrt is not installed (pip install '.[tensorrt]')"
        if self.quantized:
            from project.deploy.quantize.tensorrt_int8 import modelopt_unavailable_reason

            return modelopt_unavailable_reason(self.precision)
        reason = native_precision_reason("cuda", self.precision)
        return f"{reason} (needs compute capability 8.0+)" if reason else None

    def load_unavailable_reason(self) -> str | None:
        """A saved quantized program loads with torch-tensorrt alone (ModelOpt only calibrates)."""
        if self.quantized and torch.cuda.is_available() and importlib.util.find_spec("torch_tensorrt"):
            return None
        return self.unavailable_reason()

    def _dtype(self) -> torch.dtype:
        """The engine's input dtype: quantized engines take fp32 and quantize inside."""
        return torch.float32 if self.quantized else DTYPES[self.precision]

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        import torch_tensorrt

        dtype = self._dtype()
        image = tuple(example.shape[1:])
        top = max(1, int(self.options.get("max_batch_size") or max_batch_size))
        self.options["max_batch_size"] = top  # the fixed maximum: recorded in the bundle, honoured on load
        inputs = [
            torch_tensorrt.Input(
                min_shape=(1, *image), opt_shape=(top, *image), max_shape=(top, *image), dtype=dtype, name="x"
            )
        ]
        if self.quantized:
            from project.deploy.quantize.tensorrt_int8 import compile_quantized, quantize_modelopt

            data = self.quantization
            model, self.calibration_stats = data.timed(quantize_modelopt, net, data.calibration, self.precision)
            compiled = compile_quantized(model, inputs, self.precision, self.options["min_block_size"])
            return TensorRtEngine(compiled, dtype, inputs)
        model = copy.deepcopy(net).eval().to("cuda", dtype)
        compiled = torch_tensorrt.compile(
            model, ir="dynamo", arg_inputs=inputs, min_block_size=self.options["min_block_size"]
        )
        return TensorRtEngine(compiled, dtype, inputs)

    def save(self, engine: Engine, directory: Path) -> list[str]:
        import torch_tensorrt

        assert isinstance(engine, TensorRtEngine)
        path = Path(directory) / PROGRAM
        if engine.path is not None:
            if engine.path.resolve() != path.resolve():
                shutil.copyfile(engine.path, path)
            return [PROGRAM]
        # `save` wants real tensors, not Input specs; the batch axis stays dynamic where this release lets
        # `save` re-export with `dynamic_shapes`, else the compiled graph is exported as built (no retrace).
        example = [spec.example_tensor("opt_shape").to("cuda") for spec in engine.inputs]
        kwargs: dict[str, Any] = {"retrace": False}
        if "dynamic_shapes" in inspect.signature(torch_tensorrt.save).parameters:
            top = int(engine.inputs[0].shape["max_shape"][0])
            batch = torch.export.Dim("batch", min=1, max=max(2, top))
            kwargs = {"retrace": True, "dynamic_shapes": ({0: batch},)}
        torch_tensorrt.save(engine.module, str(path), output_format="exported_program", arg_inputs=example, **kwargs)
        return [PROGRAM]

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        import torch_tensorrt

        path = directory / PROGRAM
        return TensorRtEngine(torch_tensorrt.load(str(path)).module(), self._dtype(), path=path)
