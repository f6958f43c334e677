"""ONNX Runtime static INT8, as its documentation prescribes: `quant_pre_process` (symbolic shape
inference + graph optimisation, so fused Conv+BN+ReLU are quantized as one), then `quantize_static` in QDQ
format with per-channel QInt8 weights and QUInt8 activations, ranges calibrated on training images.

The result is a plain ONNX file (QuantizeLinear/DequantizeLinear around each op); ONNX Runtime's CPU
provider fuses the pairs into integer kernels when the session is created, so the engine is the same
`InferenceSession` the fp32 backend uses."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from project.deploy.hardware import cpu_has_vnni
from project.deploy.quantize.calibration import CalibrationSet

METHODS = ("minmax", "entropy", "percentile")


def calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name.lower() not in table:
        raise ValueError(f"unknown calibration method {name!r}: expected one of {METHODS}")
    return table[name.lower()]


def even_batch_size(count: int, largest: int) -> int:
    """The largest batch size <= `largest` that splits `count` images into equal batches: ORT's histogram
    calibrators (entropy, percentile) stack every batch's outputs and fail on a short last batch."""
    return next(b for b in range(max(1, min(largest, count)), 0, -1) if count % b == 0)


class ArrayReader:
    """`onnxruntime.quantization.CalibrationDataReader`: the calibration images, batch by batch."""

    def __init__(self, input_name: str, calibration: CalibrationSet, batch_size: int) -> None:
        from onnxruntime.quantization import CalibrationDataReader

        CalibrationDataReader.register(type(self))  # the ABC, without importing onnxruntime at module load
        self.input_name = input_name
        size = even_batch_size(calibration.size, batch_size)
        self.arrays = [b.numpy() for b in calibration.batches(size)]
        self._iter: Iterator[np.ndarray] = iter(self.arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self._iter, None)
        return None if array is None else {self.input_name: array}

    def rewind(self) -> None:
        self._iter = iter(self.arrays)


def quantize_onnx(
    model: bytes,
    calibration: CalibrationSet,
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool | None = None,
    batch_size: int = 32,
) -> bytes:
    """fp32 ONNX bytes → INT8 QDQ ONNX bytes calibrated on `calibration`. `reduce_range` (7-bit weights)
    defaults to what the CPU needs: on if it has no VNNI, where 8-bit products saturate."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method = calibration_method(method)
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    # the histogram calibrators print their progress to stdout: keep the post-fit step's output readable
    with tempfile.TemporaryDirectory(prefix="ort_int8_") as tmp, contextlib.redirect_stdout(io.StringIO()):
        fp32, prepared, quantized = (Path(tmp) / name for name in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        fp32.write_bytes(model)
        try:
            quant_pre_process(str(fp32), str(prepared))
        except Exception:  # symbolic shape inference trips on some exported Reshape/Flatten nodes
            # ONNX's own shape inference is enough for a CNN (the symbolic pass is for transformer shapes)
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        quantize_static(
            str(prepared),
            str(quantized),
            ArrayReader(input_name, calibration, batch_size),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
        )
        return quantized.read_bytes()
