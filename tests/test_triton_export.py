"""`python -m project.export format=triton`: every generated config.pbtxt parses strictly with tritonclient's
own ModelConfig schema, its tensors match the engine file's real inputs and outputs (read with onnx and
OpenVINO here, not with the exporter's code), the engine in the repository computes the Predictor's logits,
and the ensemble's preprocessing, run outside Triton with the project absent, equals the Predictor's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image

from project.config import UserError
from project.deploy.backends.eager import EagerBackend
from project.deploy.backends.onnxruntime import OnnxRuntimeBackend
from project.deploy.backends.openvino import OpenVinoBackend
from project.deploy.bundle import write_bundle
from project.export import export
from project.inference.predictor import Predictor
from tests.conftest import compose_config, run_cli
from tests.inference_helpers import NET_CONFIG, digit_samples, save_pngs

tritonclient = pytest.importorskip("tritonclient")
BENCHMARKED = [1, 16, 64]


def model_config_class() -> type:
    """`inference.ModelConfig` from the protobuf module shipped inside tritonclient (loaded by file: its
    `grpc` package needs grpcio to import, the schema module itself does not)."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("tritonclient_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ModelConfig


ModelConfig = model_config_class()


def parse(path: Path):
    return text_format.Parse(path.read_text(), ModelConfig())  # strict: an unknown field raises


@pytest.fixture(scope="module")
def bundle(digits_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ONNX Runtime (chosen), OpenVINO and eager engines, and a benchmark that measured three batch sizes."""
    net, data = digits_model
    example = torch.zeros(2, 1, 8, 8)
    backends = (OnnxRuntimeBackend(), OpenVinoBackend(), EagerBackend())
    engines = [(backend, backend.build(net, example, 64)) for backend in backends]
    benchmark = {
        "chosen": "onnxruntime",
        "backends": {"onnxruntime": {"batches": {str(b): {} for b in BENCHMARKED}}},
    }
    directory = tmp_path_factory.mktemp("triton") / "deploy"
    return write_bundle(directory, net, NET_CONFIG, data.input_spec(), engines, benchmark=benchmark)


def run_export(bundle: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_config("export", out.parent, [f"bundle={bundle}", f"out={out}", *overrides])
    return export(cfg)


def real_io(model_dir: Path) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """(name, shape) of the engine file's inputs and outputs, batch axis as -1."""
    version = model_dir / "1"
    if (version / "model.onnx").is_file():
        import onnx

        graph = onnx.load(str(version / "model.onnx")).graph

        def dims(v) -> list[int]:
            return [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]

        return [(v.name, dims(v)) for v in graph.input], [(v.name, dims(v)) for v in graph.output]
    import openvino as ov

    model = ov.Core().read_model(str(version / "model.xml"))

    def ports(items) -> list:
        return [
            (p.get_any_name(), [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()]) for p in items
        ]

    return ports(model.inputs), ports(model.outputs)


@pytest.mark.parametrize(
    ("engine", "backend"), [("onnxruntime", "onnxruntime"), ("openvino", "openvino"), ("eager", "onnxruntime")]
)
def test_configs_parse_with_tritons_schema_and_match_the_engine_file(
    bundle: Path, tmp_path: Path, engine: str, backend: str
) -> None:
    out = tmp_path / "repo"
    result = run_export(bundle, out, f"triton.engine={engine}")
    name = result["models"]["engine"]
    assert sorted(p.name for p in out.iterdir()) == sorted(result["models"].values())
    configs = {p.parent.name: parse(p) for p in out.glob("*/config.pbtxt")}
    assert set(configs) == set(result["models"].values())

    main = configs[name]
    assert main.backend == backend and main.max_batch_size == max(BENCHMARKED)
    assert list(main.dynamic_batching.preferred_batch_size) == [b for b in BENCHMARKED if b > 1]
    kinds = [g.DESCRIPTOR.fields_by_name["kind"].enum_type.values_by_number[g.kind].name for g in main.instance_group]
    assert kinds == ["KIND_CPU"]
    inputs, outputs = real_io(out / name)
    assert [(t.name, [-1, *t.dims]) for t in main.input] == inputs
    assert [(t.name, [-1, *t.dims]) for t in main.output] == outputs
    assert (out / name / main.output[0].label_filename).read_text().split() == [str(i) for i in range(10)]
    provenance = json.loads((out / name / "export.json").read_text())
    assert provenance["bundle_engine"] == engine
    assert (result["note"] is not None) == (engine == "eager")  # eager has no Triton backend: said so

    pre, ens = configs[result["models"]["preprocess"]], configs[result["models"]["ensemble"]]
    assert pre.backend == "python" and (out / pre.name / "1" / "model.py").is_file()
    assert list(pre.output[0].dims) == list(main.input[0].dims) and pre.output[0].data_type == main.input[0].data_type
    assert ens.platform == "ensemble" and ens.input[0].data_type == pre.input[0].data_type
    first, second = ens.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == (pre.name, main.name)
    assert first.output_map[pre.output[0].name] == second.input_map[main.input[0].name]
    assert set(second.output_map) == {t.name for t in main.output} == {t.name for t in ens.output}


def test_engine_in_the_repository_gives_the_predictors_logits(bundle: Path, digits_model, tmp_path: Path) -> None:
    import onnxruntime as ort

    run_export(bundle, tmp_path / "repo", "triton.engine=eager", "triton.ensemble=false")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["digits_cnn"]
    paths = save_pngs(tmp_path / "png", *digit_samples(digits_model[1], 20))
    predictor = Predictor.load(bundle, backend="eager")
    assert predictor.backend == "eager"
    batch = predictor.preprocess(paths)
    session = ort.InferenceSession(str(tmp_path / "repo" / "digits_cnn" / "1" / "model.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(logits), predictor.logits(batch), atol=1e-4, rtol=1e-4)


PREPROCESS_OUTSIDE_TRITON = """
import json, os, sys
import numpy as np
sys.path.insert(0, os.getcwd())  # as model.py puts its own folder first
from preprocess_images import load_preprocess
preprocess = load_preprocess()
used = sys.modules["project.inference.preprocess"].__file__
assert used.startswith(sys.argv[1]), used  # the vendored copy, not the installed project
paths = json.loads(sys.argv[2])
np.save(sys.argv[3], preprocess([open(p, "rb").read() for p in paths]))
try:
    preprocess([b"not an image"])
except ValueError as exc:
    print("refused:", exc)
"""


def test_ensemble_preprocessing_outside_triton_equals_the_predictor(bundle: Path, digits_model, tmp_path: Path) -> None:
    result = run_export(bundle, tmp_path / "repo")
    version = tmp_path / "repo" / result["models"]["preprocess"] / "1"
    paths = save_pngs(tmp_path / "png", *digit_samples(digits_model[1], 12))
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))  # RGB, larger: convert + resize
    photo.save(tmp_path / "photo.jpg", quality=90)
    photo.save(tmp_path / "photo.png")
    paths += [tmp_path / "photo.jpg", tmp_path / "photo.png"]
    out = tmp_path / "batch.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            PREPROCESS_OUTSIDE_TRITON,
            str(version / "vendor"),
            json.dumps([str(p) for p in paths]),
            str(out),
        ],
        cwd=version,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: image 0: not a recognised image" in proc.stdout
    predictor = Predictor.load(bundle, backend="eager")
    assert predictor.backend == "eager"
    expected = predictor.preprocess(paths)
    assert torch.equal(torch.from_numpy(np.load(out)), expected)


def test_cli_writes_the_repository_and_refuses_bad_options(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "models"
    proc = run_cli("export", f"bundle={bundle}", "format=triton", f"out={out}", log_dir=tmp_path / "logs")
    assert "wrote Triton model repository" in proc.stderr and "onnxruntime backend" in proc.stderr
    assert (out / "digits_cnn" / "1" / "model.onnx").is_file() and not (tmp_path / "logs").exists()
    cases = {
        "already has model": [f"out={out}"],
        "format=onnx is not known": [f"out={tmp_path}/x", "format=onnx"],
        "out is required": [],
        "has no engine 'tensorrt'": [f"out={tmp_path}/y", "triton.engine=tensorrt"],
    }
    for message, overrides in cases.items():
        proc = run_cli("export", f"bundle={bundle}", *overrides, log_dir=tmp_path / "logs", check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-500:]


def test_a_named_engine_triton_cannot_run_is_refused_not_swapped(
    digits_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`triton.engine=NAME` exports exactly that engine: one Triton has no backend for is refused in one
    line, never replaced by ONNX from the weights (left unset, the chosen engine may still fall back)."""
    from project.deploy.backends import BACKENDS

    class Foreign(EagerBackend):
        kind = "foreign_test"

    net, data = digits_model
    with monkeypatch.context() as m:
        m.setitem(BACKENDS, Foreign.kind, Foreign)
        engines = [(b, b.build(net, torch.zeros(2, 1, 8, 8), 8)) for b in (Foreign(), EagerBackend())]
        bundle = write_bundle(tmp_path / "deploy", net, NET_CONFIG, data.input_spec(), engines)
    with pytest.raises(UserError, match=r"^triton.engine=foreign_test: Triton has no backend for a foreign_test"):
        run_export(bundle, tmp_path / "models", "triton.engine=foreign_test")
    assert not (tmp_path / "models" / "digits_cnn").exists()
    run_export(bundle, tmp_path / "models")  # unset: the chosen engine falls back to ONNX, with a note
    assert (tmp_path / "models" / "digits_cnn" / "1" / "model.onnx").is_file()


def test_a_max_batch_above_the_verified_range_is_refused(bundle: Path, tmp_path: Path) -> None:
    """Triton would serve batches parity never checked: refused in one line, nothing written."""
    with pytest.raises(UserError, match=rf"triton.max_batch_size={2 * max(BENCHMARKED)} is above the largest batch"):
        run_export(bundle, tmp_path / "models", f"triton.max_batch_size={2 * max(BENCHMARKED)}")
    assert not (tmp_path / "models" / "digits_cnn").exists()


@pytest.mark.gpu
def test_tensorrt_plan_records_version_and_gpu(digits_model, tmp_path: Path) -> None:
    pytest.importorskip("torch_tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    from project.deploy.backends.tensorrt import TensorRtBackend

    net, data = digits_model
    backend = TensorRtBackend()
    engines = [
        (backend, backend.build(net, torch.zeros(2, 1, 8, 8), 64)),
        (EagerBackend(), EagerBackend().build(net, torch.empty(0), 0)),
    ]
    bundle = write_bundle(tmp_path / "deploy", net, NET_CONFIG, data.input_spec(), engines)
    result = run_export(bundle, tmp_path / "repo")
    config = parse(tmp_path / "repo" / "digits_cnn" / "config.pbtxt")
    assert config.backend == "tensorrt" and (tmp_path / "repo" / "digits_cnn" / "1" / "model.plan").is_file()
    assert result["built_for"]["gpu"] == torch.cuda.get_device_name() and result["built_for"]["tensorrt"]
    assert list(config.input[0].dims) == [1, 8, 8]
