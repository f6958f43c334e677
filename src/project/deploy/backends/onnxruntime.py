"""ONNX Runtime: the network exported with `torch.onnx.export(dynamo=True)` and a dynamic batch axis, run by
an `InferenceSession`. The saved `model.onnx` is self-contained: plain `onnxruntime` loads it with nothing
of this project installed (input `input`, output `logits`)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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


def session_options(threads: int | None = None, spin: bool = False) -> Any:
    """The engine's `SessionOptions`: everything else is ONNX Runtime's default (what its docs build).

    Spinning: within one run ORT's workers spin between operators; a sleeping worker would have to be
    woken for every operator, which at batch 1 made the wrapper ~1.4× slower than a default session
    (issue 13 item 8: it used to set `session.intra_op.allow_spinning=0`). Between runs, though, spinning
    workers starve every other thread pool in the process (measured: eager PyTorch 0.4 → 77 ms per call
    after an ORT session had run), so `session.force_spinning_stop` ends the spin as each run returns.
    `spin=True` keeps ORT's default (spin between runs too): a process that runs nothing else."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        # inter-op parallelism only helps graphs with parallel branches; it would fight intra-op for cores
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def input_array(x: torch.Tensor) -> np.ndarray:
    """The batch as the float32 C-ordered array ORT reads, without a copy when it already is one."""
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


class OnnxRuntimeEngine:
    def __init__(
        self, model: bytes, threads: int | None = None, providers: list[str] | None = None, spin: bool = False
    ) -> None:
        import onnxruntime as ort

        self.model = model
        self.session = ort.InferenceSession(
            model, session_options(threads, spin), providers=providers or ["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(self.output_names, {self.input_name: input_array(x)})[0])


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"
    # fp32: the exported graph; int8: static QDQ quantization of it (project.deploy.quantize.onnx_int8)
    precisions = ("fp32", "int8")
    libraries = ("onnxruntime",)

    def __init__(
        self,
        name: str | None = None,
        precision: str = "fp32",
        spin: bool = False,
        providers: list | None = None,
        method: str | None = None,
    ) -> None:
        # method: int8 calibration (minmax | entropy | percentile); None: deploy.int8.method
        super().__init__(name=name, precision=precision, spin=spin, providers=providers, method=method)

    def _unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        return None

    def _providers(self) -> list[str] | None:
        return list(self.options["providers"]) if self.options.get("providers") else None

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        model = export_onnx(net, example.cpu())
        if self.quantized:
            from project.deploy.quantize.onnx_int8 import quantize_onnx

            data = self.quantization
            method = self.options.get("method") or data.settings.method
            model, self.calibration_stats = data.timed(quantize_onnx, model, data.calibration, method=method)
        return OnnxRuntimeEngine(model, threads, self._providers(), self.options["spin"])

    def save(self, engine: Engine, directory: Path) -> list[str]:
        assert isinstance(engine, OnnxRuntimeEngine)
        (Path(directory) / MODEL_FILE).write_bytes(engine.model)
        return [MODEL_FILE]

    def bare(self, directory: Path, net: nn.Module, threads: int | None = None) -> Engine:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(Path(directory) / MODEL_FILE), options, providers=self._providers())
        return lambda x: session.run(None, {"input": x.numpy()})[0]

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        model = (directory / MODEL_FILE).read_bytes()
        return OnnxRuntimeEngine(model, threads, self._providers(), self.options.get("spin", False))
