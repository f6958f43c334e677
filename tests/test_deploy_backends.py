"""Each inference backend, for real: build from a small network, save, load back from its files, and match
eager fp32 on held-out data within its precision's tolerance."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from project.deploy.backends import BACKENDS, Backend, BackendUnavailable, Engine, backend_from_spec, parse_backend
from project.deploy.backends._util import dense
from project.deploy.parity import ParityData, check_parity, run_engine
from project.deploy.synthetic import synthetic_parity_data
from project.models.nets import DigitsCNN

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def small() -> tuple[torch.nn.Module, ParityData, torch.Tensor]:
    """A random DigitsCNN with a fitted head (decisions with real margins), its data and eager logits."""
    torch.manual_seed(0)
    net = DigitsCNN(width=16).eval()
    data = synthetic_parity_data(net, SHAPE, 10, count=512).rebatch(128)
    with torch.inference_mode():
        reference = torch.cat([net(x) for x in data.batches])
    return net, data, reference


def roundtrip(name: str, net: torch.nn.Module, data: ParityData, tmp_path: Path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    backend = parse_backend(name)
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(f"{name} unavailable here: {reason}")
    net = copy.deepcopy(net)  # a backend may change the module it is given (eager channels_last does)
    backend = backend.resolved(net)  # as the pipeline does: the options this network decides, filled in
    built = backend.build(net, data.batches[0][:2], max_batch_size=128, threads=2)
    files = backend.save(built, tmp_path)
    assert all((tmp_path / f).is_file() for f in files)
    # as a bundle does it: only the spec and the folder (the eager net for wrappers)
    loaded = backend_from_spec(json.loads(json.dumps(backend.spec))).load(tmp_path, net, threads=2)
    return backend, built, loaded, files


CPU_BACKENDS = [
    "eager",
    "eager_channels_last",
    "eager_bf16",
    "onnxruntime",
    "openvino",
    "openvino_bf16",
    "openvino_bf16_async",
    pytest.param("openvino_from_onnx", marks=pytest.mark.slow),  # a second ONNX export: same code paths
]


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_cpu_backend_roundtrip_and_parity(name: str, small, tmp_path: Path) -> None:
    net, data, reference = small
    backend, built, loaded, _ = roundtrip(name, net, data, tmp_path)
    for engine in (built, loaded):
        result, _ = check_parity(engine, data, reference, backend.precision)
        assert result.passed, result
    # any batch size up to the largest, a partial last batch included
    for bs in (1, 3):
        out = loaded(data.batches[0][:bs])
        assert out.shape == (bs, 10) and out.dtype == torch.float32 and out.device.type == "cpu"
    if name in ("onnxruntime", "openvino"):
        assert_loads_without_this_project(name, tmp_path, data.batches[0][:5], reference[:5])


def assert_loads_without_this_project(name: str, folder: Path, x: torch.Tensor, expected: torch.Tensor) -> None:
    """The saved file runs in a fresh interpreter that imports neither this project nor torch."""
    np.save(folder / "x.npy", x.numpy())
    run = {
        "onnxruntime": 'ort.InferenceSession("model.onnx").run(None, {"input": x})[0]',
        "openvino": 'ov.Core().compile_model("model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]',
    }[name]
    module = {"onnxruntime": "onnxruntime as ort", "openvino": "openvino as ov"}[name]
    script = (
        f"import sys, numpy as np, {module}\n"
        f'x = np.load("x.npy")\nnp.save("out.npy", {run})\n'
        'assert "project" not in sys.modules and "torch" not in sys.modules\n'
    )
    subprocess.run([sys.executable, "-I", "-c", script], check=True, timeout=120, cwd=folder)
    assert torch.allclose(torch.from_numpy(np.load(folder / "out.npy")), expected, atol=1e-4)


def test_inductor_aot_package_roundtrip_and_parity(small, tmp_path: Path) -> None:
    """The one compile-heavy test of the default suite (AOTInductor: ~15-25 s cold on 2 cores)."""
    net, data, reference = small
    _, _, loaded, files = roundtrip("inductor", net, data, tmp_path)
    assert files == ["model.pt2"]
    result, _ = check_parity(loaded, data, reference, "fp32")
    assert result.passed, result
    assert loaded(data.batches[0][:3]).shape == (3, 10)
    # the same images with the strides the digits data path gives a 1-channel batch (issue 13 item 4:
    # the package computed wrong logits on them, top-1 agreement 0.07)
    odd = ParityData([numpy_layout(x) for x in data.batches], data.labels, data.source)
    assert odd.batches[0].is_contiguous() and odd.batches[0].stride() != data.batches[0].stride()
    result, _ = check_parity(loaded, odd, reference, "fp32")
    assert result.passed, result


def numpy_layout(x: torch.Tensor) -> torch.Tensor:
    """`x` as a numpy fancy index leaves a 1-channel image batch: strides (H*W, 1, W, 1), which torch
    calls contiguous, so `.contiguous()` keeps them."""
    n, _, h, w = x.shape
    return torch.from_numpy(x.numpy().reshape(n, h, w)[:, None][list(range(n))])


def test_dense_gives_exact_row_major_strides() -> None:
    x = numpy_layout(torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8))
    assert x.stride() == (64, 1, 8, 1) and x.is_contiguous()
    assert x.contiguous().stride() == (64, 1, 8, 1)  # why `contiguous()` is not enough
    y = dense(x)
    assert y.stride() == (64, 64, 8, 1) and torch.equal(x, y)
    canonical = torch.zeros(3, 3, 4, 4)
    assert dense(canonical) is canonical  # no copy when the strides are already right
    assert dense(canonical.permute(0, 2, 3, 1)).stride() == (48, 12, 3, 1)


@pytest.mark.slow
def test_inductor_bf16_roundtrip_and_parity(small, tmp_path: Path) -> None:
    net, data, reference = small
    _, _, loaded, _ = roundtrip("inductor_bf16", net, data, tmp_path)
    assert check_parity(loaded, data, reference, "bf16")[0].passed


def _tensorrt_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as exc:
        return f"torch-tensorrt does not import ({type(exc).__name__}: {exc}); pip install '.[tensorrt]'"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tensorrt", "tensorrt_fp16"])
def test_tensorrt_roundtrip_and_parity(name: str, small, tmp_path: Path) -> None:
    reason = _tensorrt_skip_reason()
    if reason:
        pytest.skip(reason)
    net, data, reference = small
    backend, built, loaded, files = roundtrip(name, net, data, tmp_path)
    assert files == ["model.ep"]
    for engine in (built, loaded):
        assert check_parity(engine, data, reference, backend.precision)[0].passed
    assert loaded(data.batches[0][:3]).shape == (3, 10)  # partial batch inside [min, max]
    # the profile's fixed maximum is recorded, so a bundle (and the server) holds batches to it
    assert backend.spec["options"]["max_batch_size"] == 128 == backend_from_spec(backend.spec).max_batch_size


def test_tensorrt_reports_why_it_cannot_run_here() -> None:
    backend = parse_backend("tensorrt_fp16")
    reason = _tensorrt_skip_reason()
    if reason is None:
        pytest.skip("TensorRT runs on this machine")
    assert backend.unavailable_reason()
    with pytest.raises(BackendUnavailable):
        backend.build(DigitsCNN(), torch.zeros(2, *SHAPE), 8)


def test_backend_names_parse_to_kind_precision_and_options() -> None:
    assert set(BACKENDS) >= {"eager", "onnxruntime", "openvino", "inductor", "tensorrt"}
    ov = parse_backend("openvino_bf16_async")
    assert (ov.kind, ov.precision, ov.options["hint"], ov.name) == (
        "openvino",
        "bf16",
        "throughput",
        "openvino_bf16_async",
    )
    cl = parse_backend("eager_channels_last")
    assert cl.options["channels_last"] and cl.precision == "fp32"
    spec = parse_backend({"kind": "openvino", "precision": "bf16", "name": "ov", "hint": "throughput"}).spec
    assert spec == {
        "kind": "openvino",
        "name": "ov",
        "precision": "bf16",
        "options": {"hint": "throughput", "source": "module"},
    }
    for bad in ("nonsense", "openvino_int3", {"precision": "bf16"}):
        with pytest.raises(ValueError):
            parse_backend(bad)


def test_parity_flags_a_perturbed_engine(small) -> None:
    net, data, reference = small
    result, logits = check_parity(lambda x: -net(x).detach(), data, reference, "fp32")
    assert not result.passed and "agreement" in result.reason
    assert torch.equal(logits, -reference)
    assert run_engine(lambda x: net(x).detach(), data).shape == reference.shape


def test_parity_with_no_reference_makes_the_engine_its_own_reference(small) -> None:
    net, data, reference = small
    result, logits = check_parity(lambda x: net(x).detach(), data, None, "fp32")
    assert result.passed and result.top1_agreement == 1.0 and torch.allclose(logits, reference)


class _CountingBackend(Backend):
    """Records the calls `build` and `load` make into it."""

    kind = "test_counting"
    precisions = ("fp32", "bf16")

    def __init__(self, name: str | None = None, precision: str = "fp32", missing: str | None = None) -> None:
        super().__init__(name=name, precision=precision, missing=missing)
        self.calls: list[tuple[str, int | None]] = []

    def _unavailable_reason(self) -> str | None:
        return self.options["missing"]

    def _build(self, net: torch.nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        self.calls.append(("build", threads))
        return net

    def save(self, engine: Engine, directory: Path) -> list[str]:
        return []

    def _load(self, directory: Path, net: torch.nn.Module, threads: int | None) -> Engine:
        self.calls.append(("load", threads))
        return net


def test_build_and_load_check_availability_once_then_pass_threads_on(tmp_path: Path) -> None:
    net = DigitsCNN(width=8).eval()
    ready = _CountingBackend()
    ready.build(net, torch.zeros(2, *SHAPE), 4, threads=3)
    ready.load(tmp_path, net, threads=5)
    assert ready.calls == [("build", 3), ("load", 5)]
    absent = _CountingBackend(missing="no such accelerator")
    for call in (lambda: absent.build(net, torch.zeros(2, *SHAPE), 4), lambda: absent.load(tmp_path, net)):
        with pytest.raises(BackendUnavailable, match="no such accelerator"):
            call()
    assert absent.calls == []


def test_a_backend_declares_the_precisions_it_builds() -> None:
    assert "does not build precision 'fp16'" in _CountingBackend(precision="fp16").unavailable_reason()
    assert _CountingBackend(precision="bf16").unavailable_reason() is None
    assert "does not build precision 'bf16'" in parse_backend("onnxruntime_bf16").unavailable_reason()


def test_inductor_resolves_its_device_without_changing_its_options() -> None:
    backend = parse_backend("inductor")
    resolved = backend.resolved(DigitsCNN(width=8))
    assert resolved.options["device"] == "cpu" and backend.options["device"] is None
    assert resolved.name == backend.name and resolved.spec["options"]["device"] == "cpu"


def test_only_plain_eager_fp32_is_the_baseline() -> None:
    baselines = {name: parse_backend(name).is_baseline for name in ("eager", "eager_bf16", "eager_channels_last")}
    assert baselines == {"eager": True, "eager_bf16": False, "eager_channels_last": False}
    assert not any(parse_backend(name).is_baseline for name in ("onnxruntime", "openvino", "inductor"))
