"""build → parity → benchmark → choose → report → bundle, with real engines: a backend that raises is
recorded and skipped, an engine that fails parity is timed but never chosen, the faster engine wins."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from project.deploy.backends import BACKENDS, Backend, Engine
from project.deploy.bundle import Bundle
from project.deploy.pipeline import DeploySettings, bundle_order, choose, run_pipeline
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


class DelayedBackend(Backend):
    """Eager fp32 plus a fixed sleep per call: a real engine that is slower by a known margin."""

    kind = "test_delayed"

    def __init__(self, name: str | None = None, precision: str = "fp32", delay_s: float = 0.0) -> None:
        super().__init__(name=name, precision=precision, delay_s=delay_s)

    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        delay = self.options["delay_s"]

        @torch.inference_mode()
        def engine(x: torch.Tensor) -> torch.Tensor:
            if delay:
                time.sleep(delay)
            return net.eval()(x).float()

        return engine

    def save(self, engine: Engine, directory: Path) -> list[str]:
        (directory / "delay.json").write_text(json.dumps(self.options))
        return ["delay.json"]

    def load(self, directory: Path, net: nn.Module) -> Engine:
        return self.build(net, torch.empty(0), 0)


class WrongBackend(DelayedBackend):
    """Fastest of all (computes nothing) and wrong: fixed logits that ignore the input."""

    kind = "test_wrong"

    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        logits = torch.randn(1024, 10, generator=torch.Generator().manual_seed(0))
        return lambda x: logits[: len(x)]


class RaisingBackend(DelayedBackend):
    kind = "test_raising"

    def build(self, net: nn.Module, example: torch.Tensor, max_batch_size: int) -> Engine:
        raise RuntimeError("boom: this backend is broken")


class AbsentBackend(DelayedBackend):
    kind = "test_absent"

    def unavailable_reason(self) -> str | None:
        return "needs hardware this machine does not have"


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    net = DigitsCNN(width=16).eval()
    return net, synthetic_parity_data(net, (1, 8, 8), 10, count=256)


FAST_TIMING = {"warmup_iters": 2, "min_iters": 5, "min_duration_s": 0.05, "rounds": 2}


def test_pipeline_records_failures_never_chooses_a_wrong_engine_and_writes_everything(
    net_and_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls in (DelayedBackend, WrongBackend):  # so the bundle can rebuild them from their spec
        monkeypatch.setitem(BACKENDS, cls.kind, cls)
    net, data = net_and_data
    settings = DeploySettings.from_config(
        {"backends": ["eager"], "batch_sizes": [1, 8], "timing": FAST_TIMING, "threads": 2, "objective": "latency"}
    )
    logger = CSVLogger(tmp_path, name="csv", version="")
    report = run_pipeline(
        net,
        NET_CONFIG,
        INPUT_SPEC,
        settings,
        tmp_path,
        data=data,
        loggers=[logger],
        extra_backends=[
            DelayedBackend(name="slow", delay_s=0.004),
            WrongBackend(name="wrong"),
            RaisingBackend(name="raising"),
            AbsentBackend(name="absent"),
        ],
    )
    backends = report["backends"]
    assert backends["raising"]["status"] == "failed" and "boom" in backends["raising"]["reason"]
    assert backends["absent"]["status"] == "unavailable" and "hardware" in backends["absent"]["reason"]
    assert backends["wrong"]["status"] == "parity_failed"
    assert backends["eager"]["status"] == backends["slow"]["status"] == "ok"
    # the wrong engine is the fastest and is still not chosen; eager beats eager + 4 ms
    lat = {n: backends[n]["batches"]["1"]["latency_ms"]["p50"] for n in ("eager", "slow", "wrong")}
    assert lat["wrong"] < lat["eager"] < lat["slow"]
    assert report["chosen"] == "eager" and report["ranking"] == ["eager", "slow"]

    # benchmark.json: machine, settings, per backend and batch size: figures, parity, status
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert {"machine", "settings", "backends", "chosen", "parity_data", "model"} <= set(saved)
    assert {"cpu", "logical_cpus", "threads", "versions"} <= set(saved["machine"])
    assert saved["machine"]["versions"]["torch"] == torch.__version__
    point = saved["backends"]["eager"]["batches"]["8"]
    assert {"p50", "p90", "p99", "min", "max"} <= set(point["latency_ms"])
    assert {"median", "min", "max"} <= set(point["throughput"]) and point["speedup"] == pytest.approx(1.0)
    assert point["iterations"] >= 5
    assert {"top1_agreement", "max_abs_diff", "acc_delta", "passed"} <= set(saved["backends"]["slow"]["parity"])
    assert "build_s" in saved["backends"]["slow"] and "memory" in saved["backends"]["slow"]
    md = (tmp_path / "benchmark.md").read_text()
    assert "Chosen engine: `eager`" in md and "FAILED parity" in md and "boom" in md
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"

    # the bundle: chosen engine first, then a passing engine of another kind; loads and verifies
    bundle = Bundle.open(tmp_path / "deploy")
    assert [e["name"] for e in bundle.info["engines"]] == ["eager", "slow"]
    assert report["bundle"]["engines"] == ["eager", "slow"]
    name, engine = bundle.engine()
    assert name == "eager" and engine(data.batches[0][:3]).shape == (3, 10)
    assert bundle.benchmark["chosen"] == "eager"

    # loggers: summary metrics deploy/<backend>/<figure>
    logged = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "deploy/eager/throughput_b8" in logged and "deploy/slow/latency_p50_ms_b1" in logged


PCTS = ("p50", "p90", "p99")


def _report(figures: dict[str, tuple[float, float, str]]) -> dict[str, Any]:
    """name → (p50 ms at batch 1, img/s at batch 64, status)."""
    report = {
        "backends": {
            name: {
                "status": status,
                "batches": {
                    "1": {"latency_ms": dict.fromkeys(PCTS, p50), "throughput": {"median": 1e3 / p50}},
                    "64": {"latency_ms": dict.fromkeys(PCTS, 64e3 / ips), "throughput": {"median": ips}},
                },
            }
            for name, (p50, ips, status) in figures.items()
        }
    }
    for entry in report["backends"].values():
        for point in entry["batches"].values():
            point["speedup"] = 1.0
    return report


def test_choose_picks_the_fastest_passing_engine_for_the_objective() -> None:
    report = _report(
        {
            "eager": (3.0, 400.0, "ok"),
            "low_latency": (0.5, 2000.0, "ok"),
            "high_throughput": (1.0, 5000.0, "ok"),
            "broken": (0.1, 9000.0, "parity_failed"),
        }
    )
    assert choose(report, "latency", [1, 64])[0] == "low_latency"
    name, why, ranked = choose(report, "throughput", [1, 64])
    assert name == "high_throughput" and "throughput" in why and "broken" not in ranked
    assert choose(report, "latency", [1, 64], wanted="eager")[0] == "eager"  # explicit choice, if it passed
    assert choose(report, "latency", [1, 64], wanted="broken")[0] == "low_latency"  # never a failed one
    assert choose(_report({"broken": (0.1, 9.0, "parity_failed")}), "latency", [1, 64])[0] is None


def test_bundle_keeps_the_chosen_engine_and_fallbacks_of_other_runtimes() -> None:
    ranked = ["openvino_bf16", "openvino_bf16_async", "onnxruntime", "openvino", "inductor_bf16", "eager"]
    kinds = {"onnxruntime": "onnxruntime", "inductor_bf16": "inductor", "eager": "eager"}
    report = {"backends": {n: {"kind": kinds.get(n, "openvino")} for n in ranked}}
    assert bundle_order(report, ranked, 0) == ["openvino_bf16"]
    assert bundle_order(report, ranked, 1) == ["openvino_bf16", "onnxruntime"]
    assert bundle_order(report, ranked, 5) == ["openvino_bf16", "onnxruntime", "inductor_bf16"]


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


def test_results_reach_wandb_as_metrics_and_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.loggers import WandbLogger

    from project.deploy.report import log_to_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    report = _report({"eager": (3.0, 400.0, "ok"), "openvino_bf16": (0.5, 5000.0, "ok")})
    report.update(settings={"batch_sizes": [1, 64]}, chosen="openvino_bf16")
    logger = WandbLogger(project="deploy-test", save_dir=str(tmp_path), offline=True)
    log_to_loggers(report, [logger])
    run_dir = Path(logger.experiment.dir)
    assert logger.experiment.summary["deploy/openvino_bf16/throughput_b64"] == 5000.0
    logger.experiment.finish()
    tables = list(run_dir.rglob("*.table.json"))
    assert tables and "openvino_bf16" in tables[0].read_text()
