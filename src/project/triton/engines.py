"""The bundle's engine as a file one of Triton's own backends loads: ONNX → `onnxruntime`, OpenVINO IR →
`openvino`, TensorRT → `tensorrt` (a serialized plan, built here from the weights for this GPU). An engine
Triton has no backend for (AOTInductor, eager PyTorch) is exported to ONNX from the bundle's weights."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from project.deploy.backends import baseline_backend
from project.deploy.bundle import Bundle, BundleError
from project.triton.engine_io import EngineIO, onnx_io, openvino_io, tensorrt_io


@dataclass
class PlacedEngine:
    """What was written into the model's version folder, and how Triton should run it."""

    backend: str  # Triton backend name
    io: EngineIO
    source: str  # which bundle engine it came from, or how it was made
    note: str | None = None  # said to the user (e.g. "exported to ONNX because ...")
    parameters: dict[str, str] = field(default_factory=dict)  # backend parameters for config.pbtxt
    built_for: dict[str, Any] = field(default_factory=dict)  # TensorRT: version, GPU, precision
    instance_kind: str = "KIND_CPU"  # where its instances run unless `triton.instance_kind` says otherwise


def engine_record(bundle: Bundle, name: str | None) -> dict[str, Any]:
    """The bundle's record for engine `name` (default: the chosen one); the baseline (eager fp32, built from
    the weights) is always there. A named engine Triton cannot run as it is (no backend for its kind, and
    not the baseline, whose fp32 weights ONNX carries exactly) is refused, never swapped for another."""
    baseline = baseline_backend()
    records = [*bundle.info.get("engines", []), {**baseline.spec, "files": []}]
    wanted = name or bundle.info.get("chosen") or baseline.name
    record = next((r for r in records if r["name"] == wanted), None)
    if record is None:
        raise BundleError(f"bundle has no engine {wanted!r}; it has {[r['name'] for r in records]}")
    if name and record["kind"] not in PLACERS and record["name"] != baseline.name:
        runnable = [r["name"] for r in records if r["kind"] in PLACERS or r["name"] == baseline.name]
        raise BundleError(
            f"triton.engine={name}: Triton has no backend for a {record['kind']} engine; pick one of {runnable} "
            "(eager: the fp32 weights as ONNX), or leave triton.engine unset"
        )
    return record


def example_batch(bundle: Bundle, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    spec = bundle.preprocessing
    return torch.zeros(2, int(spec["channels"]), int(spec["height"]), int(spec["width"]), dtype=dtype)


def place_engine(bundle: Bundle, record: dict[str, Any], version_dir: Path, max_batch_size: int) -> PlacedEngine:
    """Write the engine for `record` into `version_dir` (Triton's `<model>/1/`): by a placer for its kind
    when Triton has a backend for it, else as ONNX from the weights."""
    placer = PLACERS.get(record["kind"], _place_from_weights)
    return placer(bundle, record, version_dir, max_batch_size)


def _place_onnx(bundle: Bundle, record: dict[str, Any], version_dir: Path, max_batch_size: int) -> PlacedEngine:
    shutil.copyfile(bundle.directory / "engines" / record["name"] / "model.onnx", version_dir / "model.onnx")
    return PlacedEngine("onnxruntime", onnx_io(version_dir / "model.onnx"), f"bundle engine {record['name']}")


def _place_from_weights(bundle: Bundle, record: dict[str, Any], version_dir: Path, max_batch_size: int) -> PlacedEngine:
    from project.deploy.backends.onnxruntime import export_onnx

    (version_dir / "model.onnx").write_bytes(export_onnx(bundle.net(), example_batch(bundle)))
    note = (
        f"the bundle's engine {record['name']!r} ({record['kind']}) has no Triton backend: exported the bundle's "
        "fp32 weights to ONNX for Triton's onnxruntime backend instead"
    )
    return PlacedEngine("onnxruntime", onnx_io(version_dir / "model.onnx"), "ONNX exported from the weights", note)


def _place_openvino(bundle: Bundle, record: dict[str, Any], version_dir: Path, max_batch_size: int) -> PlacedEngine:
    """The IR as the bundle holds it, with names given to unnamed tensors (Triton matches by name)."""
    import openvino as ov

    model = ov.Core().read_model(str(bundle.directory / "engines" / record["name"] / "model.xml"))
    for prefix, ports in (("input", model.inputs), ("logits", model.outputs)):
        for i, port in enumerate(ports):
            if not port.get_names():
                port.get_tensor().set_names({prefix if len(ports) == 1 else f"{prefix}_{i}"})
    ov.save_model(model, str(version_dir / "model.xml"), compress_to_fp16=False)
    hint = str(record.get("options", {}).get("hint", "latency")).upper()
    note = None
    if record.get("precision", "fp32") != "fp32":
        note = f"Triton's openvino backend runs the IR at its default precision, not the bundle's {record['precision']}"
    return PlacedEngine(
        "openvino", openvino_io(version_dir / "model.xml"), f"bundle engine {record['name']}", note,
        parameters={"PERFORMANCE_HINT": hint},
    )  # fmt: skip


def _place_tensorrt(  # pragma: no cover - needs an NVIDIA GPU with TensorRT (tests: `gpu` marker)
    bundle: Bundle, record: dict[str, Any], version_dir: Path, max_batch_size: int
) -> PlacedEngine:
    """A serialized TensorRT plan built from the bundle's weights on this GPU, batch 1..max_batch_size.
    (The bundle's own `model.ep` is a Torch-TensorRT program, which Triton's tensorrt backend cannot load.)
    A plan only runs with the TensorRT version and GPU architecture it was built with: both are recorded."""
    from project.deploy.backends._util import batch_dim
    from project.deploy.hardware import DTYPES

    if not torch.cuda.is_available():
        raise BundleError("a TensorRT plan is built on the GPU it will run on: run the export on that machine")
    import tensorrt
    import torch_tensorrt

    precision = record.get("precision", "fp32")
    if precision not in DTYPES:  # a quantized engine cannot be rebuilt from the float weights alone
        raise BundleError(
            f"a {precision} TensorRT engine cannot be re-planned for Triton from the bundle's weights; "
            f"export a float engine instead (triton.engine=tensorrt or tensorrt_fp16)"
        )
    dtype = DTYPES[precision]
    example = example_batch(bundle, dtype).to("cuda")
    image = tuple(example.shape[1:])
    net = copy.deepcopy(bundle.net()).eval().to("cuda", dtype)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch_dim()},))
    spec = torch_tensorrt.Input(
        min_shape=(1, *image), opt_shape=(max_batch_size, *image), max_shape=(max_batch_size, *image), dtype=dtype
    )
    plan = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(program, arg_inputs=[spec])
    (version_dir / "model.plan").write_bytes(plan)
    major, minor = torch.cuda.get_device_capability()
    built_for = {
        "tensorrt": tensorrt.__version__,
        "torch_tensorrt": torch_tensorrt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "precision": precision,
    }
    return PlacedEngine("tensorrt", tensorrt_io(plan), f"bundle engine {record['name']} (rebuilt as a plan)",
                        built_for=built_for, instance_kind="KIND_GPU")  # fmt: skip


# engine kind → how its file reaches Triton's own backend; kinds not listed go through ONNX from the weights
PLACERS: dict[str, Callable[[Bundle, dict[str, Any], Path, int], PlacedEngine]] = {
    "onnxruntime": _place_onnx,
    "openvino": _place_openvino,
    "tensorrt": _place_tensorrt,
}
