"""INT8 engines in the post-fit step, on the trained digits model: each builds, saves, reloads and passes
the int8 gate (test split, against eager fp32); a deliberately damaged int8 engine is timed but never
chosen; calibration comes from the train split; the report and the bundle round-trip; the real CLI
(`python -m project.benchmark`) calibrates a random-weight net on labelled synthetic data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from project.deploy.backends.onnxruntime import OnnxRuntimeBackend
from project.deploy.bundle import Bundle
from project.deploy.parity import parity_from_loader
from project.deploy.pipeline import run_pipeline
from project.deploy.quantize.calibration import Int8Settings, QuantizationData, quantization_from_datamodule
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings
from project.inference.predictor import Predictor
from tests.conftest import run_cli, run_folder
from tests.inference_helpers import NET_CONFIG

FAST_TIMING = {"warmup_iters": 1, "min_iters": 3, "min_duration_s": 0.02, "rounds": 1}


class DamagedInt8Backend(OnnxRuntimeBackend):
    """ONNX Runtime int8 calibrated on images scaled down 1000×: every activation range is far too narrow,
    so real inputs saturate. A real quantized engine, built by the real library, that is wrong."""

    kind = "test_damaged_int8"

    def _build(self, net, example, max_batch_size, threads):
        data = self.quantization
        tiny = dataclasses.replace(data.calibration, images=data.calibration.images * 1e-3)
        self.quantization = QuantizationData(tiny, data.validation, data.settings)
        return super()._build(net, example, max_batch_size, threads)


@pytest.fixture(scope="module")
def int8_run(digits_model, tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchmarkReport, Path, dict]:
    net, data = digits_model
    out = tmp_path_factory.mktemp("int8_pipeline")
    settings = DeploySettings.from_config(
        {
            "backends": ["eager", "onnxruntime", "onnxruntime_int8", "openvino_int8"],
            "batch_sizes": [1, 64],
            "timing": FAST_TIMING,
            "threads": 2,
            "strict": True,
            "int8": {"calibration_size": 200, "seed": 3},
        }
    )
    test_split = parity_from_loader(data.test_dataloader(), data.preprocess, None, "test split of digits")
    quantization = quantization_from_datamodule(data, settings.int8)
    report = run_pipeline(
        net,
        NET_CONFIG,
        data.input_spec(),
        settings,
        out,
        data=test_split,
        quantization=quantization,
        extra_backends=[DamagedInt8Backend(name="damaged_int8", precision="int8")],
    )
    return report, out, {"quantization": quantization, "eager_acc": report.engines["eager"].parity.acc}


@pytest.mark.parametrize("name", ["onnxruntime_int8", "openvino_int8"])
def test_int8_engine_builds_reloads_and_passes_the_gate(int8_run, name: str) -> None:
    report, _, _ = int8_run
    entry = report.engines[name]
    assert entry.status == "ok", entry.reason
    assert entry.precision == "int8" and entry.roundtrip_s is not None and entry.files
    assert entry.parity.acc_delta >= -1.0 and entry.parity.top1_agreement >= 0.97
    assert entry.parity.samples == 360  # the whole digits test split
    assert entry.calibration_samples == 200 and entry.calibration_s > 0
    assert entry.points and all(p.images_per_s > 0 for p in entry.points.values())


def test_int8_files_are_smaller_and_calibration_never_saw_the_test_split(int8_run, digits_model) -> None:
    report, _, extra = int8_run
    assert report.engines["onnxruntime_int8"].file_bytes < report.engines["onnxruntime"].file_bytes
    calibration = extra["quantization"].calibration
    assert calibration.split == "train" and report.extra["calibration_data"]["split"] == "train"
    train_x = digits_model[1].splits["train"][0]
    assert int(calibration.indices.max()) < len(train_x)
    assert torch.equal(calibration.images, digits_model[1].preprocess(train_x[calibration.indices]))


def test_a_damaged_int8_engine_is_timed_and_shown_but_never_chosen(int8_run) -> None:
    report, out, _ = int8_run
    damaged = report.engines["damaged_int8"]
    assert damaged.status == "parity_failed" and damaged.points, damaged.reason
    assert "accuracy drop" in damaged.reason or "agreement" in damaged.reason
    assert report.chosen != "damaged_int8" and "damaged_int8" not in report.ranking
    assert "damaged_int8" not in report.bundle["engines"]
    assert "damaged_int8" in (out / "benchmark.md").read_text()


def test_report_and_bundle_round_trip_with_int8(int8_run, digits_model) -> None:
    report, out, _ = int8_run
    again = BenchmarkReport.read(out / "benchmark.json")
    assert again.to_json() == report.to_json()
    entry = again.engines["onnxruntime_int8"]
    assert (entry.calibration_samples, entry.file_bytes) == (200, report.engines["onnxruntime_int8"].file_bytes)
    markdown = (out / "benchmark.md").read_text()
    assert "calibration: images / s" in markdown and "| 200 / " in markdown
    # every engine the bundle ships loads back, int8 ones with their precision, and answers like in the report
    bundle = Bundle.open(out / "deploy")
    _, data = digits_model
    images, labels = data.splits["test"]
    for name in report.bundle["engines"]:
        predictor = Predictor.load(out / "deploy", backend=name)
        assert predictor.backend == name
        predictions = predictor.predict_uint8(images)
        acc = sum(int(p.index == y) for p, y in zip(predictions, labels.tolist(), strict=True)) / len(labels)
        assert acc == pytest.approx(report.engines[name].parity.acc, abs=0.01), name  # batching may move a tie
    int8_records = [r for r in bundle.info["engines"] if r["precision"] == "int8"]
    for record in int8_records:
        name, engine = bundle.engine(record["name"])
        assert name == record["name"] and engine(data.preprocess(images[:3])).shape == (3, 10)


def test_the_int8_gate_and_settings_are_configurable() -> None:
    settings = DeploySettings.from_config(
        {"parity": {"int8": {"max_acc_drop": 0.25, "min_top1_agreement": 0.99}}, "int8": {"method": "entropy"}}
    )
    tol = settings.tolerances["int8"]
    assert (tol.max_acc_drop, tol.min_top1_agreement, tol.atol, tol.max_acc_delta) == (0.25, 0.99, None, None)
    assert settings.int8 == Int8Settings(method="entropy")
    with pytest.raises(ValueError, match=r"deploy\.int8"):
        DeploySettings.from_config({"int8": {"calibration_sise": 10}})
    with pytest.raises(ValueError, match=r"deploy\.parity"):
        DeploySettings.from_config({"parity": {"int9": {}}})


def test_random_weight_net_is_calibrated_and_gated_on_synthetic_data(tmp_path: Path) -> None:
    proc = run_cli(
        "benchmark",
        "model=digits_cnn",
        "random_weights=true",
        "input_shape=[1,8,8]",
        "deploy.backends=[eager,onnxruntime_int8]",
        "deploy.batch_sizes=[1,32]",
        "deploy.timing.min_duration_s=0.02",
        "deploy.timing.min_iters=3",
        "deploy.int8.calibration_size=128",
        "extras.print_config=false",
        log_dir=tmp_path,
    )
    doc = json.loads((run_folder(proc) / "benchmark.json").read_text())
    entry = doc["backends"]["onnxruntime_int8"]
    assert doc["calibration_data"]["source"].startswith("synthetic train")
    assert entry["calibration_samples"] == 128 and entry["status"] == "ok", entry.get("reason")
    assert doc["parity_data"]["source"].startswith("synthetic")
    assert entry["parity"]["top1_agreement"] >= 0.97


def test_auto_prefers_accuracy_then_precision_among_engines_of_about_the_same_speed() -> None:
    from project.deploy.results import EngineResult, ParityResult, TimingPoint
    from project.deploy.selection import choose

    def engine(p50: float, precision: str, acc: float, status: str = "ok") -> EngineResult:
        point = TimingPoint(latency_ms={"p50": p50}, throughput={"median": 1e3 / p50}, speedup=1.0)
        return EngineResult(precision=precision, status=status, parity=ParityResult(acc=acc), points={1: point})

    def chosen(engines: dict[str, EngineResult], margin: float = 0.05) -> str | None:
        report = BenchmarkReport(settings={"batch_sizes": [1]}, baseline="eager", engines=engines)
        return choose(report, "latency", tie_margin=margin)[0]

    eager = engine(3.0, "fp32", 0.97)
    # int8 clearly faster: it ships even though it is a little less accurate
    assert chosen({"eager": eager, "fp32": engine(1.0, "fp32", 0.97), "int8": engine(0.5, "int8", 0.965)}) == "int8"
    # within 5 %: same accuracy → the higher precision; higher accuracy → the more accurate
    assert chosen({"eager": eager, "fp32": engine(1.0, "fp32", 0.97), "int8": engine(0.97, "int8", 0.97)}) == "fp32"
    assert chosen({"eager": eager, "bf16": engine(1.0, "bf16", 0.97), "int8": engine(0.98, "int8", 0.975)}) == "int8"
    # without a margin the fastest wins; a failing int8 engine never does
    assert chosen({"eager": eager, "fp32": engine(1.0, "fp32", 0.97), "int8": engine(0.97, "int8", 0.97)}, 0) == "int8"
    assert chosen({"eager": eager, "int8": engine(0.1, "int8", 0.5, "parity_failed")}) == "eager"


def test_the_default_post_fit_step_ships_a_gated_int8_engine(trained_default: Path) -> None:
    """`python -m project.train` (the embedded default): onnxruntime_int8 is built from 300 train-split
    images, passes the int8 gate on the test split, and its row is in the report whichever engine won."""
    report = BenchmarkReport.read(trained_default / "benchmark.json")
    entry = report.engines["onnxruntime_int8"]
    assert entry.status == "ok", entry.reason
    assert entry.calibration_samples == 300 and report.extra["calibration_data"]["split"] == "train"
    assert entry.parity.acc_delta >= -1.0 and entry.parity.data.startswith("test split")
    assert entry.file_bytes < report.engines["onnxruntime"].file_bytes
