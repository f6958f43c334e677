"""INT8 engines on the trained digits model: calibration data from the train split only, each library's
quantizer, save → reload in a real runtime session, accuracy within 1 point of eager fp32 on the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from project.data.digits import DigitsDataModule
from project.deploy.quantize.calibration import calibration_from_datamodule, sample_indices, synthetic_calibration

MAX_DROP = 1.0  # accuracy points


def accuracy_of(engine, data: DigitsDataModule) -> float:
    images, labels = data.splits["test"]
    with torch.inference_mode():
        logits = torch.cat([engine(x) for x in data.preprocess(images).split(128)])
    return (logits.argmax(1) == labels).float().mean().item() * 100


@pytest.fixture(scope="module")
def digits(digits_model):
    net, data = digits_model
    return net, data, accuracy_of(net, data)


@pytest.fixture(scope="module")
def calibration(digits_model):
    return calibration_from_datamodule(digits_model[1], size=300, seed=0)


def test_calibration_is_a_seeded_subset_of_the_train_split_only(digits_model) -> None:
    _, data = digits_model
    cal = calibration_from_datamodule(data, size=300, seed=0)
    train_x, train_y = data.splits["train"]
    assert cal.split == "train" and cal.size == 300
    assert cal.indices.unique().numel() == 300 and int(cal.indices.max()) < len(train_x)
    # exactly the evaluation transform of those train images (no augmentation), labels alongside
    assert torch.equal(cal.images, data.preprocess(train_x[cal.indices]).contiguous())
    assert torch.equal(cal.labels, train_y[cal.indices])
    # reproducible, and a different seed draws different images
    assert torch.equal(cal.indices, calibration_from_datamodule(data, 300, seed=0).indices)
    assert not torch.equal(cal.indices, calibration_from_datamodule(data, 300, seed=1).indices)
    # no calibration image is one of the test images (bytes compared: the splits are disjoint draws)
    test_x = data.splits["test"][0]
    test_rows = {bytes(row) for row in test_x.flatten(1).numpy()}
    overlap = sum(bytes(row) in test_rows for row in train_x[cal.indices].flatten(1).numpy())
    assert overlap <= 3, f"{overlap} calibration images equal test images"  # digits has a few exact duplicates
    with pytest.raises(ValueError, match="never calibrated on the test split"):
        calibration_from_datamodule(data, 300, split="test")
    val = calibration_from_datamodule(data, 1000, split="val")
    assert val.split == "val" and val.size == len(data.splits["val"][0])  # capped at the split size


def test_sample_indices_are_bounded_and_sorted() -> None:
    idx = sample_indices(50, 80, seed=3)
    assert idx.tolist() == list(range(50))
    idx = sample_indices(1000, 10, seed=3)
    assert len(idx) == 10 and bool((idx[1:] > idx[:-1]).all())
    with pytest.raises(ValueError):
        sample_indices(10, 0, seed=0)


def test_synthetic_calibration_is_disjoint_from_the_parity_draws() -> None:
    from project.deploy.synthetic import prototype_images

    cal = synthetic_calibration((1, 8, 8), 10, 64, seed=0)
    parity_x, _ = prototype_images((1, 8, 8), 10, 64, seed=0, sample_seed=2)
    assert cal.labels is not None and cal.images.shape == (64, 1, 8, 8)
    assert not torch.allclose(cal.images, parity_x)


@pytest.mark.parametrize("method", ["minmax", pytest.param("entropy", marks=pytest.mark.slow), "percentile"])
def test_onnxruntime_static_int8_reloads_and_keeps_accuracy(method, digits, calibration, tmp_path: Path) -> None:
    import onnx

    from project.deploy.backends.onnxruntime import OnnxRuntimeEngine, export_onnx
    from project.deploy.quantize.onnx_int8 import quantize_onnx

    net, data, eager_acc = digits
    fp32 = export_onnx(net, calibration.images[:2])
    path = tmp_path / "model.onnx"
    path.write_bytes(quantize_onnx(fp32, calibration, method=method))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    engine = OnnxRuntimeEngine(path.read_bytes(), threads=2)
    acc = accuracy_of(engine, data)
    assert acc >= eager_acc - MAX_DROP, (method, acc, eager_acc)
    assert engine(calibration.images[:1]).shape == (1, 10)  # any batch size


def test_openvino_nncf_int8_reloads_and_keeps_accuracy(digits, calibration, tmp_path: Path) -> None:
    import openvino as ov

    from project.deploy.backends.openvino import OpenVinoEngine
    from project.deploy.quantize.openvino_int8 import quantize_openvino

    net, data, eager_acc = digits
    model = ov.convert_model(net, example_input=calibration.images[:2], input=[ov.PartialShape([-1, 1, 8, 8])])
    quantized = quantize_openvino(model, calibration)
    ov.save_model(quantized, tmp_path / "model.xml", compress_to_fp16=False)
    reloaded = ov.Core().read_model(tmp_path / "model.xml")
    assert any(op.get_type_name() == "FakeQuantize" for op in reloaded.get_ops())
    engine = OpenVinoEngine(reloaded, "fp32", "latency", threads=2)
    acc = accuracy_of(engine, data)
    assert acc >= eager_acc - MAX_DROP, (acc, eager_acc)


def test_openvino_accuracy_control_measures_on_the_validation_split(digits, calibration) -> None:
    import openvino as ov

    from project.deploy.backends.openvino import OpenVinoEngine
    from project.deploy.quantize.openvino_int8 import quantize_openvino, top1_accuracy

    net, data, eager_acc = digits
    validation = calibration_from_datamodule(data, 180, split="val")
    model = ov.convert_model(net, example_input=calibration.images[:2], input=[ov.PartialShape([-1, 1, 8, 8])])
    quantized = quantize_openvino(model, calibration, validation, max_drop=MAX_DROP)
    engine = OpenVinoEngine(quantized, "fp32", "latency", threads=2)
    assert accuracy_of(engine, data) >= eager_acc - MAX_DROP
    # the validation function NNCF is given measures what it says
    compiled = ov.Core().compile_model(quantized, "CPU")
    items = [(x.numpy(), y.numpy()) for x, y in validation.labelled_batches(64)]
    expected = np.mean([int(engine(torch.from_numpy(x)).argmax(1)[i] == y[i]) for x, y in items for i in range(len(y))])
    assert top1_accuracy(compiled, items) == pytest.approx(expected)
    with pytest.raises(ValueError, match="validation"):
        quantize_openvino(model, calibration, None, max_drop=MAX_DROP)


@pytest.mark.gpu
def test_tensorrt_modelopt_int8_keeps_accuracy(digits, calibration) -> None:
    from project.deploy.quantize.tensorrt_int8 import compile_quantized, modelopt_unavailable_reason, quantize_modelopt

    reason = modelopt_unavailable_reason("int8")
    if reason:
        pytest.skip(reason)
    import torch_tensorrt

    net, data, eager_acc = digits
    quantized = quantize_modelopt(net, calibration, "int8")
    spec = torch_tensorrt.Input(min_shape=(1, 1, 8, 8), opt_shape=(128, 1, 8, 8), max_shape=(128, 1, 8, 8))
    compiled = compile_quantized(quantized, [spec], "int8")
    acc = accuracy_of(lambda x: compiled(x.cuda()).float().cpu(), data)
    assert acc >= eager_acc - MAX_DROP


def test_static_batch_plan_runs_any_batch_with_the_least_padding() -> None:
    from project.deploy.quantize.inductor_int8 import batch_plan

    assert batch_plan(1, [1, 256]) == [(1, 1)]
    assert batch_plan(256, [1, 256]) == [(256, 256)]
    assert batch_plan(3, [1, 256]) == [(1, 1)] * 3  # three single calls beat one 256-batch of padding
    assert batch_plan(300, [1, 256]) == [(256, 256)] + [(1, 1)] * 44
    assert batch_plan(200, [1, 256]) == [(256, 200)]  # 56 padded images < 200 single calls
    for count in range(1, 70):
        plan = batch_plan(count, [1, 8, 32])
        assert sum(take for _, take in plan) == count and all(0 < take <= size for size, take in plan)


@pytest.mark.slow  # two AOTInductor compiles (~1-4 min on 2 cores); the batch plan is checked fast above
def test_inductor_pt2e_int8_reloads_and_keeps_accuracy(digits, calibration, tmp_path: Path) -> None:
    from project.deploy.backends import parse_backend
    from project.deploy.quantize.calibration import Int8Settings, QuantizationData

    backend = parse_backend("inductor_int8")
    if backend.unavailable_reason():
        pytest.skip(backend.unavailable_reason())
    net, data, eager_acc = digits
    backend.quantization = QuantizationData(calibration, None, Int8Settings())
    built = backend.build(net, calibration.images[:2], max_batch_size=64, threads=2)
    files = backend.save(built, tmp_path)
    assert sorted(files) == ["model_b1.pt2", "model_b64.pt2"]
    loaded = parse_backend("inductor_int8").load(tmp_path, net, threads=2)
    assert accuracy_of(loaded, data) >= eager_acc - MAX_DROP
    assert backend.calibration_stats.samples == calibration.size


CPUINFO = (
    "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\n"
    "processor\t: 1\nflags\t\t: fpu avx2 {extra}\n"
)


@pytest.mark.parametrize(
    ("extra", "vnni"),
    [("avx512f avx512_vnni", True), ("avx_vnni", True), ("amx_tile amx_int8", True), ("avx512f avx512bw", False)],
)
def test_cpu_has_vnni_reads_the_cpuinfo_flags(extra: str, vnni: bool) -> None:
    from project.deploy.hardware import cpu_has_vnni

    assert cpu_has_vnni(CPUINFO.format(extra=extra)) is vnni
    assert cpu_has_vnni("model name\t: avx512_vnni in a name, not a flag\n") is False


@pytest.mark.parametrize("vnni", [True, False], ids=["vnni", "no-vnni"])
def test_onnxruntime_int8_keeps_weights_to_7_bits_without_vnni(vnni: bool, monkeypatch) -> None:
    """Without VNNI, 8-bit u8×s8 products saturate in 16-bit lanes: the weights must stay within ±64."""
    import onnx
    from onnx import numpy_helper

    import project.deploy.quantize.onnx_int8 as onnx_int8
    from project.deploy.backends.onnxruntime import OnnxRuntimeEngine, export_onnx

    monkeypatch.setattr(onnx_int8, "cpu_has_vnni", lambda: vnni)  # only picks the branch; the rest runs for real
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 10))
    calibration = synthetic_calibration((1, 8, 8), 10, 32, seed=0)
    model = onnx_int8.quantize_onnx(export_onnx(net.eval(), calibration.images[:2]), calibration)
    weights = [
        numpy_helper.to_array(t)
        for t in onnx.load_from_string(model).graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert (largest <= 64) is not vnni, largest
    assert OnnxRuntimeEngine(model, threads=1)(calibration.images[:3]).shape == (3, 10)
