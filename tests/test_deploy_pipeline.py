"""build → parity → timing → choose → report → bundle, with real engines: a backend that raises is
recorded and skipped, an engine that fails parity is timed but never chosen, the fastest passing engine
wins (checked on made-up timings), and a `benchmark.json` from before the typed report still loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from project.deploy.backends import BACKENDS, Backend, Engine
from project.deploy.bundle import Bundle
from project.deploy.pipeline import run_pipeline
from project.deploy.report import engine_table, markdown
from project.deploy.results import BenchmarkReport, EngineResult, TimingPoint
from project.deploy.selection import bundle_order, choose
from project.deploy.settings import DeploySettings
from project.deploy.synthetic import synthetic_parity_data
from project.models.nets import DigitsCNN

INPUT_SPEC = {
    "channels": 1,
    "height": 8,
    "width": 8,
    "value_range": [0, 255],
    "mean": [0.0],
    "std": [1.0],
    "class_names": [str(i) for i in range(10)],
}
NET_CONFIG = {"_target_": "project.models.nets.DigitsCNN", "in_channels": 1, "num_classes": 10, "width": 16}


class CopyBackend(Backend):
    """Eager fp32 under another kind: a second runtime that passes parity, with a file of its own."""

    kind = "test_copy"

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        return torch.inference_mode()(lambda x: net.eval()(x).float())

    def save(self, engine: Engine, directory: Path) -> list[str]:
        (directory / "options.json").write_text(json.dumps(self.options))
        return ["options.json"]

    def _load(self, directory: Path, net: nn.Module, threads: int | None) -> Engine:
        return self._build(net, torch.empty(0), 0, threads)


class WrongBackend(CopyBackend):
    """Fastest of all (computes nothing) and wrong: fixed logits that ignore the input."""

    kind = "test_wrong"

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        logits = torch.randn(1024, 10, generator=torch.Generator().manual_seed(0))
        return lambda x: logits[: len(x)]


class WrongAtBatchOneBackend(CopyBackend):
    """Right at every batch but 1, where it answers the next class: checked at the largest batch alone
    (as parity once was), it passes."""

    kind = "test_wrong_at_1"

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        engine = super()._build(net, example, max_batch_size, threads)
        return lambda x: engine(x).roll(1, dims=1) if len(x) == 1 else engine(x)


class RaisingBackend(CopyBackend):
    kind = "test_raising"

    def _build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int, threads: int | None) -> Engine:
        raise RuntimeError("boom: this backend is broken")


class AbsentBackend(CopyBackend):
    kind = "test_absent"

    def _unavailable_reason(self) -> str | None:
        return "needs hardware this machine does not have"


FAST_TIMING = {"warmup_iters": 2, "min_iters": 5, "min_duration_s": 0.05, "rounds": 2}
FIXTURE = Path(__file__).parent / "fixtures" / "benchmark_before_issue10.json"


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    net = DigitsCNN(width=16).eval()
    return net, synthetic_parity_data(net, (1, 8, 8), 10, count=256)


@pytest.fixture(scope="module")
def pipeline_run(net_and_data, tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchmarkReport, Path]:
    """One real run with an engine of every outcome; `backend: eager` makes the choice independent of
    timing noise (the automatic choice is checked on made-up timings below)."""
    out = tmp_path_factory.mktemp("pipeline")
    net, data = net_and_data
    settings = DeploySettings.from_config(
        {"backends": ["eager"], "backend": "eager", "batch_sizes": [1, 8], "timing": FAST_TIMING, "threads": 2}
    )
    with pytest.MonkeyPatch.context() as patch:
        # registered so the bundle can rebuild them from their spec
        for cls in (CopyBackend, WrongBackend, WrongAtBatchOneBackend):
            patch.setitem(BACKENDS, cls.kind, cls)
        report = run_pipeline(
            net,
            NET_CONFIG,
            INPUT_SPEC,
            settings,
            out,
            data=data,
            loggers=[CSVLogger(out, name="csv", version="")],
            extra_backends=[
                CopyBackend(name="copy"),
                WrongBackend(name="wrong"),
                WrongAtBatchOneBackend(name="wrong_at_1"),
                RaisingBackend(name="raising"),
                AbsentBackend(name="absent"),
            ],
        )
    return report, out


def test_a_backend_that_raises_is_recorded_and_the_rest_go_on(pipeline_run) -> None:
    report, _ = pipeline_run
    assert report.engines["raising"].status == "failed" and "boom" in report.engines["raising"].reason
    assert report.engines["eager"].passed and report.engines["copy"].passed


def test_an_unavailable_backend_is_recorded_with_its_reason(pipeline_run) -> None:
    absent = pipeline_run[0].engines["absent"]
    assert absent.status == "unavailable" and "hardware" in absent.reason and not absent.points


def test_an_engine_that_fails_parity_is_timed_but_never_ranked(pipeline_run) -> None:
    report, _ = pipeline_run
    wrong = report.engines["wrong"]
    assert wrong.status == "parity_failed" and wrong.parity.top1_agreement < 0.5
    assert set(wrong.points) == {1, 8} and "wrong" not in report.ranking
    assert report.chosen == "eager" and set(report.ranking) == {"eager", "copy"}


def test_parity_is_checked_at_every_timed_batch_size(pipeline_run) -> None:
    report, out = pipeline_run
    for name in ("eager", "copy"):
        by_size = report.engines[name].parity.by_batch_size
        assert sorted(by_size) == [1, 8], name
        assert all(r.passed and r.top1_agreement == 1.0 and r.max_abs_diff < 1e-4 for r in by_size.values()), name
    odd = report.engines["wrong_at_1"]
    assert odd.parity.top1_agreement == 1.0  # the full check at the largest batch alone passes it ...
    assert not odd.parity.by_batch_size[1].passed and odd.parity.by_batch_size[1].top1_agreement < 0.5
    assert odd.parity.by_batch_size[8].passed  # ... batch 1 does not, and so neither does the engine
    assert odd.status == "parity_failed" and "at batch 1: top-1 agreement" in odd.reason
    assert "wrong_at_1" not in report.ranking
    saved = BenchmarkReport.read(out / "benchmark.json").engines["wrong_at_1"].parity
    assert saved.by_batch_size[1].max_abs_diff == odd.parity.by_batch_size[1].max_abs_diff
    assert Bundle.open(out / "deploy").info["verified_batch_sizes"] == [1, 8]


def test_benchmark_json_is_the_returned_report(pipeline_run) -> None:
    report, out = pipeline_run
    saved = BenchmarkReport.read(out / "benchmark.json")
    assert saved.to_json() == json.loads(json.dumps(report.to_json()))
    assert {"cpu", "logical_cpus", "threads", "versions"} <= set(saved.machine)
    assert saved.machine["versions"]["torch"] == torch.__version__ and saved.baseline == "eager"


def test_every_point_carries_percentiles_throughput_and_speedup(pipeline_run) -> None:
    report, _ = pipeline_run
    point = report.engines["eager"].points[8]
    assert {"p50", "p90", "p99", "min", "max"} <= set(point.latency_ms)
    assert {"median", "min", "max"} <= set(point.throughput) and point.speedup == pytest.approx(1.0)
    assert point.iterations >= 5
    copy = report.engines["copy"]
    assert copy.build_s is not None and copy.memory is not None and copy.file_bytes > 0
    assert copy.parity.measured and copy.parity.passed


def test_markdown_and_plot_are_written(pipeline_run) -> None:
    _, out = pipeline_run
    md = (out / "benchmark.md").read_text()
    assert "Chosen engine: `eager`" in md and "FAILED parity" in md and "boom" in md
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


def test_the_bundle_holds_the_chosen_engine_then_another_runtime(pipeline_run, net_and_data) -> None:
    report, out = pipeline_run
    bundle = Bundle.open(out / "deploy")
    assert [e["name"] for e in bundle.info["engines"]] == ["eager", "copy"] == report.bundle["engines"]
    name, engine = bundle.engine()
    assert name == "eager" and engine(net_and_data[1].batches[0][:3]).shape == (3, 10)
    assert bundle.benchmark.chosen == "eager"


def test_loggers_get_summary_metrics(pipeline_run) -> None:
    _, out = pipeline_run
    logged = (out / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "deploy/eager/throughput_b8" in logged and "deploy/copy/latency_p50_ms_b1" in logged


PCTS = ("p50", "p90", "p99")


def _report(figures: dict[str, tuple[float, float, str]], kinds: dict[str, str] | None = None) -> BenchmarkReport:
    """Made-up timings: name → (p50 ms at batch 1, img/s at batch 64, status)."""
    engines = {
        name: EngineResult(
            kind=(kinds or {}).get(name, name),
            status=status,
            points={
                1: TimingPoint(latency_ms=dict.fromkeys(PCTS, p50), throughput={"median": 1e3 / p50}, speedup=1.0),
                64: TimingPoint(latency_ms=dict.fromkeys(PCTS, 64e3 / ips), throughput={"median": ips}, speedup=1.0),
            },
        )
        for name, (p50, ips, status) in figures.items()
    }
    return BenchmarkReport(settings={"batch_sizes": [1, 64]}, baseline="eager", engines=engines)


def test_choose_picks_the_fastest_passing_engine_for_the_objective() -> None:
    report = _report(
        {
            "eager": (3.0, 400.0, "ok"),
            "low_latency": (0.5, 2000.0, "ok"),
            "high_throughput": (1.0, 5000.0, "ok"),
            "broken": (0.1, 9000.0, "parity_failed"),
        }
    )
    assert choose(report, "latency") == (
        "low_latency",
        "fastest engine that passed parity for latency: 0.500 ms p50 at batch 1, 1.00× eager fp32",
        ["low_latency", "high_throughput", "eager"],
    )
    name, why, ranked = choose(report, "throughput")
    assert name == "high_throughput" and "throughput" in why and ranked == ["high_throughput", "low_latency", "eager"]


def test_choose_honours_a_requested_engine_only_if_it_passed() -> None:
    report = _report({"eager": (3.0, 400.0, "ok"), "fast": (0.5, 2000.0, "ok"), "broken": (0.1, 9.0, "parity_failed")})
    assert choose(report, "latency", wanted="eager")[0] == "eager"
    assert choose(report, "latency", wanted="broken")[0] == "fast"
    assert choose(_report({"broken": (0.1, 9.0, "parity_failed")}), "latency")[0] is None


def test_bundle_keeps_the_chosen_engine_and_fallbacks_of_other_runtimes() -> None:
    ranked = ["openvino_bf16", "openvino_bf16_async", "onnxruntime", "openvino", "inductor_bf16", "eager"]
    kinds = {"onnxruntime": "onnxruntime", "inductor_bf16": "inductor", "eager": "eager"}
    report = _report(dict.fromkeys(ranked, (1.0, 1.0, "ok")), {n: kinds.get(n, "openvino") for n in ranked})
    assert bundle_order(report, ranked, 0) == ["openvino_bf16"]
    assert bundle_order(report, ranked, 1) == ["openvino_bf16", "onnxruntime"]
    assert bundle_order(report, ranked, 5) == ["openvino_bf16", "onnxruntime", "inductor_bf16"]


def test_a_benchmark_json_from_before_the_typed_report_still_loads() -> None:
    """Written by `python -m project.train trainer.max_epochs=2` before `BenchmarkReport` existed."""
    doc = json.loads(FIXTURE.read_text())
    report = BenchmarkReport.from_json(doc)
    assert json.dumps(report.to_json()) == json.dumps(doc)  # nothing lost, same layout, same order
    assert report.baseline == "eager" and report.batch_sizes == [1, 32, 256]
    assert choose(report, "latency")[0] == report.chosen
    columns, rows = engine_table(report)
    assert [r[0] for r in rows] == list(doc["backends"]) and len(columns) == 6 + 2 * 3
    assert f"Chosen engine: `{report.chosen}`" in markdown(report)
    headline = report.headline()
    assert headline.backend == doc["chosen"]
    assert headline.latency_p50_ms == doc["backends"][doc["chosen"]]["batches"]["1"]["latency_ms"]["p50"]


def test_deploy_config_groups_compose_and_validate(compose_cfg) -> None:
    default = DeploySettings.from_config(compose_cfg("train").deploy)
    assert default.backend == "auto" and default.batch_sizes == [1, 32, 256] and "eager" in default.backends
    full = DeploySettings.from_config(compose_cfg("benchmark", ["deploy=full"]).deploy)
    assert {"inductor_bf16", "tensorrt", "openvino_bf16", "eager_channels_last"} <= set(full.backends)
    assert full.tolerances["bf16"].min_top1_agreement == 0.995 and full.timing.rounds > 1
    with pytest.raises(ValueError, match="unknown deploy keys"):
        DeploySettings.from_config({"backendz": ["eager"]})
    with pytest.raises(ValueError, match="objective"):
        DeploySettings.from_config({"objective": "speed"})


def test_the_training_callback_gets_typed_settings(compose_cfg) -> None:
    from hydra.utils import instantiate

    callback = instantiate(compose_cfg("train", ["deploy.objective=throughput"]).callbacks.deploy)
    assert isinstance(callback.settings, DeploySettings) and callback.settings.objective == "throughput"


def test_results_reach_wandb_as_metrics_and_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import WandbLogger

    from project.deploy.report import log_to_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    report = _report({"eager": (3.0, 400.0, "ok"), "openvino_bf16": (0.5, 5000.0, "ok")})
    report.chosen = "openvino_bf16"
    logger = WandbLogger(project="deploy-test", save_dir=str(tmp_path), offline=True)
    log_to_loggers(report, [logger])
    run_dir = Path(logger.experiment.dir)
    assert logger.experiment.summary["deploy/openvino_bf16/throughput_b64"] == 5000.0
    logger.experiment.finish()
    tables = list(run_dir.rglob("*.table.json"))
    assert tables and "openvino_bf16" in tables[0].read_text()
