"""The post-fit step, shared by the training callback and `python -m project.benchmark`: prepare → build
and check every engine → time them side by side → choose → write the report and the deploy bundle.

Every backend runs in its own `try`: one that is unavailable here or fails is recorded with its reason and
the rest go on. Each engine is saved and loaded back before it is checked and timed (`roundtrip`), so the
figures belong to the files that ship, not to an object that only existed in this process.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from project.deploy.backends import Backend, BackendUnavailable, library_versions
from project.deploy.bundle import write_bundle
from project.deploy.hardware import Engine, machine_info, resolve_device
from project.deploy.overhead import split_bare, with_bare_sessions
from project.deploy.parity import ParityData, check_parity
from project.deploy.quantize.calibration import QuantizationData
from project.deploy.report import log_to_loggers, print_table, write_benchmark_markdown, write_plot
from project.deploy.results import BenchmarkReport, EngineResult
from project.deploy.selection import backend_list, bundle_order, choose
from project.deploy.settings import DeploySettings
from project.deploy.timing import PeakMemory, time_engines

log = logging.getLogger(__name__)
# in the run folder (the data module copies the card there); the bundle ships them for the serving page
BUNDLE_PICTURES = ("benchmark.png", "data_card/samples.png", "data_card/class_counts.png")


class Progress:
    """Progress lines while engines build and run (they take seconds to minutes)."""

    def __init__(self, callback: Callable[[str], None] | None = None) -> None:
        self.callback = callback

    def __call__(self, message: str) -> None:
        log.info("deploy: %s", message)
        if self.callback:
            self.callback(message)


@dataclass
class DeployRun:
    """What every step of one pipeline run shares."""

    net: nn.Module  # eval-mode fp32, on the CPU
    data: ParityData
    settings: DeploySettings
    device: torch.device
    threads: int
    work: Path  # scratch folder for the roundtrip
    progress: Progress
    quantization: QuantizationData | None = None  # calibration images for int8 engines (train split)


def parity_data_or_random(
    net: nn.Module, shape: list[int], data: ParityData | None, max_samples: int | None
) -> ParityData:
    """The given parity data (capped at `max_samples`), or random inputs labelled by the network itself."""
    if data is None:
        gen = torch.Generator().manual_seed(0)
        images = torch.randn((512, *shape), generator=gen)
        with torch.inference_mode():
            labels = net(images).argmax(1)
        data = ParityData([images], labels, "random inputs, eager fp32 predictions as labels (no test data)")
    if max_samples:
        images = torch.cat(data.batches)[:max_samples]
        data = ParityData([images], data.labels[:max_samples], data.source)
    return data


def bench_inputs(data: ParityData, sizes: Iterable[int]) -> dict[int, torch.Tensor]:
    """One input tensor per batch size, cut from the parity images (tiled when there are too few), shared
    by every engine so they all see the very same bytes."""
    images = torch.cat(data.batches)
    out = {}
    for bs in sizes:
        reps = -(-bs // len(images))
        out[bs] = (images.repeat(reps, 1, 1, 1) if reps > 1 else images)[:bs].contiguous()
    return out


def build_and_check(
    backend: Backend, run: DeployRun, reference: torch.Tensor | None
) -> tuple[EngineResult, Backend, Engine | None, torch.Tensor | None]:
    """Build one engine, save and reload it (`roundtrip`), check parity against `reference` (None: this is
    the baseline, its own logits become the reference). Never raises: a failure is the result's status.
    Returns the result, the backend with its resolved options, the engine (None if it failed) and its
    logits on the parity data."""
    result = EngineResult(kind=backend.kind, precision=backend.precision, options=dict(backend.options))
    try:
        reason = backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        run.progress(f"building {backend.name}")
        with PeakMemory() as memory:
            start = time.perf_counter()
            # a private copy: a backend may convert the module it is given (eager channels_last does, in place)
            net = copy.deepcopy(run.net).to(run.device if backend.runs_on_device else "cpu")
            backend = backend.resolved(net)
            backend.quantization = run.quantization if backend.quantized else None
            engine = backend.build(net, run.data.batches[0][:2], run.settings.batch_sizes[-1], run.threads)
            result.build_s = round(time.perf_counter() - start, 3)
            if backend.calibration_stats is not None:
                result.calibration_samples = backend.calibration_stats.samples
                result.calibration_s = backend.calibration_stats.seconds
            if run.settings.roundtrip:
                start = time.perf_counter()
                folder = run.work / backend.name
                folder.mkdir(parents=True, exist_ok=True)
                files = backend.save(engine, folder)
                engine = backend.load(folder, copy.deepcopy(run.net).to(run.device), run.threads)
                result.roundtrip_s = round(time.perf_counter() - start, 3)
                result.files = files
                size = sum((folder / f).stat().st_size for f in files)
                result.files_mb, result.file_bytes = round(size / 2**20, 2), size
            result.options = dict(backend.options)
            tolerances, sizes = run.settings.tolerances, run.settings.batch_sizes  # each size a bundle may run
            parity, logits = check_parity(engine, run.data, reference, backend.precision, tolerances, sizes)
            result.parity = parity
        result.memory = memory.as_dict()
        result.status = "ok" if parity.passed else "parity_failed"
        result.reason = parity.reason
        verdict = "passed" if result.passed else f"FAILED ({result.reason})"
        run.progress(f"{backend.name}: built in {result.build_s:.2f} s, parity {verdict}")
        return result, backend, engine, logits
    except BackendUnavailable as exc:
        result.status, result.reason = "unavailable", str(exc)
        run.progress(f"{backend.name}: unavailable ({exc})")
    except Exception as exc:
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        log.warning("deploy: %s failed: %s", backend.name, result.reason, exc_info=log.isEnabledFor(logging.DEBUG))
    return result, backend, None, None


def new_report(
    run: DeployRun, net_config: Mapping[str, Any], shape: list[int], checkpoint: str | None, baseline: str
) -> BenchmarkReport:
    """The report's header: the model, the machine, the settings, the parity data."""
    return BenchmarkReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        checkpoint=str(checkpoint) if checkpoint else None,
        model={
            "name": str(net_config.get("_target_", type(run.net).__name__)).rsplit(".", 1)[-1],
            "target": net_config.get("_target_"),
            "parameters": sum(p.numel() for p in run.net.parameters()),
            "input_shape": shape,
        },
        machine=machine_info(run.threads, run.device, library_versions()),
        settings=run.settings.as_report(run.threads, str(run.device)),
        parity_data={"source": run.data.source, "samples": run.data.count},
        baseline=baseline,
    )


def time_and_rank(report: BenchmarkReport, engines: Mapping[str, Engine], run: DeployRun) -> None:
    """Time every engine that built, record speedups over the baseline, and choose."""
    run.progress(f"timing {len(engines)} engines at batch sizes {run.settings.batch_sizes}")
    points, errors = time_engines(
        engines, bench_inputs(run.data, run.settings.batch_sizes), run.settings.timing, run.progress
    )
    points = split_bare(points, report)
    for name, error in errors.items():
        if name not in report.engines:
            continue  # a bare session: nothing of ours failed
        report.engines[name].status, report.engines[name].reason = "failed", f"while timing: {error}"
    baseline = points.get(report.baseline or "", {})
    for name, per_bs in points.items():
        for bs, point in per_bs.items():
            ref = baseline.get(bs)
            point.speedup = ref.p50_ms / point.p50_ms if ref else None
        report.engines[name].points = per_bs
    report.chosen, report.chosen_reason, report.ranking = choose(
        report, run.settings.objective, run.settings.backend, run.settings.tie_margin
    )
    run.progress(f"chosen: {report.chosen} ({report.chosen_reason})")


def draw_plot(report: BenchmarkReport, output_dir: Path, settings: DeploySettings) -> None:
    """benchmark.png, before the bundle is written: it ships in the bundle's pictures."""
    try:
        if settings.plot:
            write_plot(report, output_dir / "benchmark.png")
    except Exception as exc:
        log.warning("deploy: could not draw benchmark.png: %s", exc)


def write_outputs(report: BenchmarkReport, output_dir: Path, loggers: Iterable[Any]) -> None:
    """benchmark.{json,md}, the loggers and the console table."""
    report.write(output_dir / "benchmark.json")
    write_benchmark_markdown(report, output_dir / "benchmark.md")
    log_to_loggers(report, loggers)
    print_table(report)


def run_pipeline(
    net: nn.Module,
    net_config: Mapping[str, Any],
    input_spec: Mapping[str, Any],
    settings: DeploySettings,
    output_dir: str | Path,
    data: ParityData | None = None,
    loggers: Iterable[Any] = (),
    checkpoint: str | None = None,
    progress: Callable[[str], None] | None = None,
    extra_backends: Iterable[Backend] = (),
    quantization: QuantizationData | None = None,
) -> BenchmarkReport:
    """Build, verify, time and choose; write benchmark.{json,md,png} and the deploy bundle into
    `output_dir`. Returns the report (what benchmark.json holds). `quantization`: the calibration images
    of int8 engines (from the train split; never the test split parity runs on)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    threads = int(settings.threads or previous_threads)
    torch.set_num_threads(threads)  # eager PyTorch's pool is process-wide; other engines get `threads` directly
    work = output_dir / ".deploy_work"
    shutil.rmtree(work, ignore_errors=True)
    net = net.float().eval().cpu()
    shape = [int(input_spec["channels"]), int(input_spec["height"]), int(input_spec["width"])]
    try:
        # prepare
        backends = backend_list(settings.backends) + list(extra_backends)
        data = parity_data_or_random(net, shape, data, settings.parity_max_samples).rebatch(settings.batch_sizes[-1])
        device = resolve_device(settings.device)
        run = DeployRun(net, data, settings, device, threads, work, Progress(progress), quantization)
        report = new_report(run, net_config, shape, checkpoint, baseline=backends[0].name)
        if quantization is not None:
            report.extra["calibration_data"] = quantization.calibration.describe()

        # build and check, the baseline first: its logits are everyone's reference
        built: dict[str, tuple[Backend, Engine]] = {}
        reference: torch.Tensor | None = None
        for backend in backends:
            result, backend, engine, logits = build_and_check(backend, run, reference)
            report.engines[backend.name] = result
            if engine is not None:
                built[backend.name] = (backend, engine)
            if reference is None:
                if logits is None:
                    raise RuntimeError(f"the eager fp32 baseline failed: {result.reason}")
                reference = logits

        # time, choose, write
        engines = {name: engine for name, (_, engine) in built.items()}
        if settings.bare and settings.roundtrip:  # each library's own session beside its engine
            engines = with_bare_sessions(built, work, net, threads, run.device)
        time_and_rank(report, engines, run)
        draw_plot(report, output_dir, settings)
        if settings.bundle and report.chosen is not None:
            ship_bundle(report, built, net, net_config, input_spec, output_dir, settings, run.progress)
        write_outputs(report, output_dir, loggers)
        return report
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(work, ignore_errors=True)


def ship_bundle(
    report: BenchmarkReport,
    built: Mapping[str, tuple[Backend, Engine]],
    net: nn.Module,
    net_config: Mapping[str, Any],
    input_spec: Mapping[str, Any],
    output_dir: Path,
    settings: DeploySettings,
    progress: Progress,
) -> None:
    """Write `<output_dir>/deploy` with the chosen engine and its fallbacks; record where (or the error)."""
    order = bundle_order(report, report.ranking, int(settings.fallbacks))
    try:
        bundle = write_bundle(
            output_dir / "deploy",
            net,
            dict(net_config),
            dict(input_spec),
            engines=[built[n] for n in order],
            benchmark=report.to_json(),
            verified_batch_sizes=settings.batch_sizes,  # every engine shipped passed parity at each
            pictures=[output_dir / p for p in BUNDLE_PICTURES if (output_dir / p).is_file()],
        )
        report.bundle = {"path": str(bundle), "engines": order}
        progress(f"deploy bundle written to {bundle} (engines in fallback order: {', '.join(order)})")
    except Exception as exc:
        report.bundle = {"error": f"{type(exc).__name__}: {exc}"}
        log.error("deploy: could not write the bundle: %s", report.bundle["error"])
        if settings.strict:
            raise
