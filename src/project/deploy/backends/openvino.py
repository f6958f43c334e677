"""OpenVINO on the CPU: the network converted with `openvino.convert_model` (from the module, or from the
exported ONNX file), compiled for CPU and saved as OpenVINO IR (`model.xml` + `model.bin`).

Precision is explicit (`INFERENCE_PRECISION_HINT`): on CPUs with AVX-512-BF16/AMX OpenVINO's own default is
bf16, so `fp32` must be asked for. Hints: `latency` (one stream, one synchronous request: the fastest way to
serve one batch at a time) or `throughput` (several streams; it only pays when requests overlap, so the
engine splits a batch across an `AsyncInferQueue`)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from project.deploy.backends._util import export_example, quiet_export
from project.deploy.backends.base import Backend, BackendUnavailable
from project.deploy.hardware import Engine

XML, BIN = "model.xml", "model.bin"
# int8: an NNCF-quantized model (project.deploy.quantize.openvino_int8); the layers NNCF leaves in floating
# point (or accuracy control returns to it) run in f32, so the engine stays comparable with eager fp32
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}


class OpenVinoEngine:
    def __init__(self, model: Any, precision: str, hint: str, threads: int | None, device: str = "CPU") -> None:
        import openvino as ov

        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "PERFORMANCE_HINT": hint.upper(),
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if hint == "latency":
            config["NUM_STREAMS"] = 1
        self.model = model  # kept for `save`
        self.compiled = ov.Core().compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.queue = None
        if hint == "throughput":
            n = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self.queue = ov.AsyncInferQueue(self.compiled, max(1, n))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.queue is None or len(array) < 2 * len(self.queue):
            return torch.from_numpy(self.request.infer({0: array}, share_inputs=True)[0].copy())
        return torch.from_numpy(self._overlapped(array))

    def _overlapped(self, array: np.ndarray) -> np.ndarray:
        """One slice of the batch per request, all in flight at once."""
        n, parts = len(array), len(self.queue)
        bounds = np.linspace(0, n, parts + 1).astype(int)
        out: list[np.ndarray | None] = [None] * parts

        def done(request: Any, index: int) -> None:
            out[index] = request.get_output_tensor(0).data.copy()

        self.queue.set_callback(done)
        for i in range(parts):
            self.queue.start_async({0: array[bounds[i] : bounds[i + 1]]}, i)
        self.queue.wait_all()
        return np.concatenate(out)


class OpenVinoBackend(Backend):
    kind = "openvino"
    precisions = tuple(INFERENCE_PRECISION)  # fp32, bf16, fp16, int8
    libraries = ("openvino",)

    def __init__(
        self, name: str | None = None, precision: str = "fp32", hint: str = "latency", source: str = "module"
    ) -> None:
        super().__init__(name=name, precision=precision, hint=hint, source=source)

    def _unavailable_reason(self) -> str | None:
        if self.options["hint"] not in ("latency", "throughput"):
            return f"unknown hint {self.options['hint']!r} (latency or throughput)"
        if self.options["source"] not in ("module", "onnx"):
            return f"unknown source {self.options['source']!r} (module or onnx)"
        if importlib.util.find_spec("openvino") is None:
            return "openvino is not installed"
        if self.precision in CAPABILITY:
            import openvino as ov

            capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if CAPABILITY[self.precision] not in capabilities:
                return f"this CPU has no native {self.precision} (OpenVINO CPU capabilities: {', '.join(capabilities)})"
        return None

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        import openvino as ov

        example = export_example(example.cpu())
        shape = ov.PartialShape([-1, *example.shape[1:]])  # dynamic batch, fixed image size
        if self.options["source"] == "onnx":
            from project.deploy.backends.onnxruntime import export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                path.write_bytes(export_onnx(net, example))
                model = ov.convert_model(path, input=[shape])
        else:
            with quiet_export():
                model = ov.convert_model(net.eval(), example_input=example, input=[shape])
        if self.quantized:
            if importlib.util.find_spec("nncf") is None:
                raise BackendUnavailable("nncf is not installed (OpenVINO int8 is built with NNCF)")
            from project.deploy.quantize.openvino_int8 import quantize_openvino

            data, drop = self.quantization, self.quantization.settings.max_drop
            model, self.calibration_stats = data.timed(
                quantize_openvino, model, data.calibration, data.validation, max_drop=drop
            )
        return OpenVinoEngine(model, self.precision, self.options["hint"], threads)

    def save(self, engine: Engine, directory: Path) -> list[str]:
        import openvino as ov

        assert isinstance(engine, OpenVinoEngine)
        # compress_to_fp16 defaults to True: it would store fp16 weights under an fp32 engine's name
        ov.save_model(engine.model, Path(directory) / XML, compress_to_fp16=False)
        return [XML, BIN]

    def bare(self, directory: Path, net: nn.Module, threads: int | None = None) -> Engine:
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled = ov.Core().compile_model(Path(directory) / XML, "CPU", config)
        return lambda x: compiled(x.numpy())[0]

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        # `load` checked availability: a bf16 engine on a CPU without bf16 is refused, the bundle falls back
        import openvino as ov

        return OpenVinoEngine(ov.Core().read_model(directory / XML), self.precision, self.options["hint"], threads)
