"""Write a Triton model repository for a bundle:

    OUT/<model>/config.pbtxt, 1/model.{onnx,xml+bin,plan}, labels.txt, export.json   the bare-tensor engine
    OUT/<model>_preprocess/config.pbtxt, 1/model.py (+ the project's preprocessing)    BYTES images → tensor
    OUT/<model>_ensemble/config.pbtxt, 1/                                             images → logits

Batching comes from the bundle's benchmark (max batch = the largest measured, preferred sizes = the
measured ones), tensor names and dims from the engine file itself."""

from __future__ import annotations

import json
import shutil
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from project.atomic import atomic_dir
from project.config import UserError
from project.deploy.bundle import Bundle
from project.triton import pbtxt
from project.triton.engine_io import TensorInfo
from project.triton.engines import PlacedEngine, engine_record, place_engine
from project.triton.pbtxt import Enum
from project.triton.vendor import vendor_modules

IMAGE_INPUT = "IMAGE"  # encoded image bytes, one per batch item
PREPROCESSED = "PREPROCESSED"
PREPROCESSING_MODULE = "project.inference.preprocess"
TEMPLATES = Path(__file__).resolve().parent / "python_model"
DEFAULT_MAX_BATCH = 64
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass
class TritonSettings:
    """`conf/export.yaml` → `triton:`."""

    model_name: str | None = None  # null: the bundle's model name (as served over V2)
    engine: str | None = None  # a bundle engine name; null: the one the deploy step chose
    max_batch_size: int | None = None  # null: the largest batch parity verified (64 when the bundle knows none)
    max_queue_delay_us: int = 2000
    instances: int = 1
    instance_kind: str = "auto"  # auto (GPU for TensorRT, else CPU), cpu or gpu
    preprocess_instances: int = 1
    ensemble: bool = True
    overwrite: bool = False


def benchmarked_batches(bundle: Bundle, engine: str) -> list[int]:
    """Batch sizes the post-fit benchmark measured for `engine` (else for the chosen engine)."""
    report = bundle.benchmark
    if report is None:
        return []
    result = report.engines.get(engine) or report.engines.get(report.chosen or "")
    return sorted(result.points) if result is not None and result.points else report.batch_sizes


def _tensor(t: TensorInfo, labels: bool = False) -> dict[str, Any]:
    return {
        "name": t.name,
        "data_type": Enum(t.data_type),
        "dims": t.dims,
        "label_filename": "labels.txt" if labels else None,
    }


def _header(lines: list[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def engine_config(name: str, placed: PlacedEngine, max_batch: int, preferred: list[int], s: TritonSettings) -> str:
    kind = KINDS.get(s.instance_kind) or placed.instance_kind
    config = {
        "name": name,
        "backend": placed.backend,
        "max_batch_size": max_batch,
        "input": [_tensor(t) for t in placed.io.inputs],
        "output": [_tensor(t, labels=i == 0) for i, t in enumerate(placed.io.outputs)],
        "dynamic_batching": {
            "preferred_batch_size": preferred or None,
            "max_queue_delay_microseconds": s.max_queue_delay_us,
        },
        "instance_group": [{"count": s.instances, "kind": Enum(kind)}],
        "parameters": pbtxt.parameters(placed.parameters) or None,
    }
    built = [f"built for {k}: {v}" for k, v in placed.built_for.items()]
    return _header([f"from {placed.source}", *built]) + pbtxt.render(config)


def preprocess_config(name: str, engine_input: TensorInfo, max_batch: int, s: TritonSettings) -> str:
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [{"name": PREPROCESSED, "data_type": Enum(engine_input.data_type), "dims": engine_input.dims}],
        "instance_group": [{"count": s.preprocess_instances, "kind": Enum("KIND_CPU")}],
    }
    return _header(["encoded images → the engine's input (the project's own preprocessing, see 1/)"]) + pbtxt.render(
        config
    )


def ensemble_config(name: str, engine: str, preprocess: str, placed: PlacedEngine, max_batch: int) -> str:
    outputs = placed.io.outputs
    config = {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [{"name": IMAGE_INPUT, "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [_tensor(t, labels=i == 0) for i, t in enumerate(outputs)],
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": preprocess,
                    "model_version": -1,
                    "input_map": {"key": IMAGE_INPUT, "value": IMAGE_INPUT},
                    "output_map": {"key": PREPROCESSED, "value": "preprocessed_image"},
                },
                {
                    "model_name": engine,
                    "model_version": -1,
                    "input_map": {"key": placed.io.inputs[0].name, "value": "preprocessed_image"},
                    "output_map": [{"key": t.name, "value": t.name} for t in outputs],
                },
            ]
        },
    }
    return _header([f"BYTES images → {preprocess} → {engine}"]) + pbtxt.render(config)


def _check_engine(placed: PlacedEngine, spec: dict[str, Any]) -> None:
    if len(placed.io.inputs) != 1 or not placed.io.outputs:
        raise UserError(f"the engine has {len(placed.io.inputs)} inputs: the Triton export expects one image input")
    expected = [int(spec["channels"]), int(spec["height"]), int(spec["width"])]
    if placed.io.inputs[0].dims != expected:
        raise UserError(f"engine input dims {placed.io.inputs[0].dims} differ from preprocessing.json {expected}")
    if not placed.io.dynamic_batch:
        raise UserError("the engine has a fixed batch size; Triton's batching needs a dynamic batch axis")


def _write_preprocess(folder: Path, bundle: Bundle) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    for template in ("model.py", "preprocess_images.py"):
        shutil.copyfile(TEMPLATES / template, version / template)
    (version / "preprocessing.json").write_text(json.dumps(bundle.preprocessing, indent=2) + "\n")
    vendor_modules([PREPROCESSING_MODULE], version / "vendor")


def write_repository(bundle: Bundle, out: str | Path, s: TritonSettings) -> dict[str, Any]:
    """Write the models into `out` (other models already there are left alone); returns what was written."""
    out = Path(out)
    name = s.model_name or bundle.model_name
    names = {"engine": name, "preprocess": f"{name}_preprocess", "ensemble": f"{name}_ensemble"}
    if not s.ensemble:
        names = {"engine": name}
    taken = [n for n in names.values() if (out / n).exists()]
    if taken and not s.overwrite:
        raise UserError(f"{out} already has model(s) {taken}: pass triton.overwrite=true or another out=")
    record = engine_record(bundle, s.engine)
    batches = benchmarked_batches(bundle, record["name"])
    limit = bundle.batch_limit(record["name"])  # parity was checked up to this batch size
    max_batch = int(s.max_batch_size or limit or (max(batches) if batches else DEFAULT_MAX_BATCH))
    if max_batch < 1:
        raise UserError(f"triton.max_batch_size must be at least 1, got {max_batch}")
    bundle.check_batch_size(max_batch, record["name"], "triton.max_batch_size")
    preferred = [b for b in batches if 1 < b <= max_batch]

    # each model folder is built beside its final place and swapped in by renames (`atomic_dir`) only
    # once all of them are complete: a failure leaves the models already there as they were
    with ExitStack() as stack:
        staged = {role: stack.enter_context(atomic_dir(out / model)) for role, model in names.items()}
        (staged["engine"] / "1").mkdir()
        placed = place_engine(bundle, record, staged["engine"] / "1", max_batch)
        _check_engine(placed, bundle.preprocessing)
        labels = "".join(f"{label}\n" for label in bundle.class_names)
        (staged["engine"] / "config.pbtxt").write_text(engine_config(name, placed, max_batch, preferred, s))
        (staged["engine"] / "labels.txt").write_text(labels)
        provenance = {
            "bundle": str(bundle.directory.resolve()),
            "bundle_engine": record["name"],
            "triton_backend": placed.backend,
            "source": placed.source,
            "note": placed.note,
            "built_for": placed.built_for or None,
            "settings": asdict(s),
        }
        (staged["engine"] / "export.json").write_text(json.dumps(provenance, indent=2) + "\n")
        if s.ensemble:
            pre, ens = names["preprocess"], names["ensemble"]
            _write_preprocess(staged["preprocess"], bundle)
            pre_config = preprocess_config(pre, placed.io.inputs[0], max_batch, s)
            (staged["preprocess"] / "config.pbtxt").write_text(pre_config)
            (staged["ensemble"] / "1").mkdir()
            (staged["ensemble"] / "config.pbtxt").write_text(ensemble_config(ens, name, pre, placed, max_batch))
            (staged["ensemble"] / "labels.txt").write_text(labels)
    return {"repository": str(out), "models": names, "max_batch_size": max_batch, "preferred": preferred, **provenance}
