"""ONNX Runtime: the network exported with `torch.onnx.export(dynamo=True)` and a dynamic batch axis, run by
an `InferenceSession`. The saved `model.onnx` is self-contained: plain `onnxruntime` loads it with nothing
of this project installed (input `input`, output `logits`)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch
from torch import nn

from project.deploy.backends._util import batch_dim, export_example, quiet_export
from project.deploy.backends.base import Backend
from project.deploy.hardware import Engine

MODEL_FILE = "model.onnx"


def export_onnx(net: nn.Module, example: torch.Tensor) -> bytes:
    """The eval-mode fp32 network as ONNX bytes (opset of the installed exporter, batch axis dynamic)."""
    with tempfile.TemporaryDirectory() as tmp, quiet_export():
        program = torch.onnx.export(
            net.eval(),
            (export_example(example),),
            dynamo=True,
            dynamic_shapes=({0: batch_dim()},),
            input_names=["input"],
            output_names=["logits"],
            verbose=False,
        )
        path = Path(tmp) / MODEL_FILE
        program.save(path)
        return path.read_bytes()


class OnnxRuntimeEngine:
    def __init__(
        self, model: bytes, threads: int | None = None, providers: list[str] | None = None, spin: bool = False
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            # inter-op parallelism only helps graphs with parallel branches; it would fight intra-op for cores
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin:
            # idle ORT workers otherwise busy-wait for the next run and starve every other thread pool in
            # the process (measured: eager PyTorch 0.4 ms → 77 ms per call after an ORT session had run)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model = model
        self.session = ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"
    precisions = ("fp32",)  # it runs the exported fp32 graph
    libraries = ("onnxruntime",)

    def __init__(
        self, name: str | None = None, precision: str = "fp32", spin: bool = False, providers: list | None = None
    ) -> None:
        super().__init__(name=name, precision=precision, spin=spin, providers=providers)

    def _unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        return None

    def _providers(self) -> list[str] | None:
        return list(self.options["providers"]) if self.options.get("providers") else None

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        return OnnxRuntimeEngine(export_onnx(net, example.cpu()), threads, self._providers(), self.options["spin"])

    def save(self, engine: Engine, directory: Path) -> list[str]:
        assert isinstance(engine, OnnxRuntimeEngine)
        (Path(directory) / MODEL_FILE).write_bytes(engine.model)
        return [MODEL_FILE]

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        model = (directory / MODEL_FILE).read_bytes()
        return OnnxRuntimeEngine(model, threads, self._providers(), self.options.get("spin", False))
