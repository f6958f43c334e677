"""The input and output tensors an engine file really has (name, Triton data type, shape with the batch
axis first), read from the file itself: ONNX with `onnx`, OpenVINO IR with `openvino.Core().read_model`,
a TensorRT plan with the TensorRT runtime. Triton refuses a config whose tensors disagree with the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# ONNX TensorProto element types → Triton
ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16", 11: "TYPE_FP64"}
ONNX_TYPES[16] = "TYPE_BF16"
OPENVINO_TYPES = {"f32": "TYPE_FP32", "f16": "TYPE_FP16", "bf16": "TYPE_BF16", "i64": "TYPE_INT64", "u8": "TYPE_UINT8"}
TENSORRT_TYPES = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "BF16": "TYPE_BF16", "INT32": "TYPE_INT32"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: `shape` includes the batch axis (-1 where dynamic)."""

    name: str
    data_type: str
    shape: tuple[int, ...]

    @property
    def dims(self) -> list[int]:
        """Triton's `dims` for a batching model: the shape without the batch axis."""
        return list(self.shape[1:])


@dataclass(frozen=True)
class EngineIO:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def dynamic_batch(self) -> bool:
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


def onnx_io(path: Path) -> EngineIO:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def info(value: onnx.ValueInfoProto) -> TensorInfo:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        return TensorInfo(value.name, ONNX_TYPES.get(tensor.elem_type, f"onnx:{tensor.elem_type}"), shape)

    inputs = tuple(info(v) for v in graph.input if v.name not in initializers)
    return EngineIO(inputs, tuple(info(v) for v in graph.output))


def openvino_io(path: Path) -> EngineIO:
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def info(port: object) -> TensorInfo:
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        kind = port.get_element_type().get_type_name()
        name = port.get_any_name() if port.get_names() else ""  # converted models may leave outputs unnamed
        return TensorInfo(name, OPENVINO_TYPES.get(kind, f"openvino:{kind}"), shape)

    return EngineIO(tuple(info(p) for p in model.inputs), tuple(info(p) for p in model.outputs))


def tensorrt_io(plan: bytes) -> EngineIO:  # pragma: no cover - needs a GPU and TensorRT
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        kind = engine.get_tensor_dtype(name).name
        info = TensorInfo(name, TENSORRT_TYPES.get(kind, f"tensorrt:{kind}"), tuple(engine.get_tensor_shape(name)))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(info)
    return EngineIO(tuple(inputs), tuple(outputs))
