"""build → parity → benchmark → choose → bundle: the post-fit step, shared by the training callback and
`python -m project.benchmark`.

Every backend runs in its own `try`: one that is unavailable here or fails is recorded with its reason and
the rest go on. Each engine is saved and loaded back before it is checked and timed (`roundtrip`), so the
figures belong to the files that ship, not to an object that only existed in this process.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from project.config import plain
from project.deploy.backends import Backend, BackendUnavailable, Engine, parse_backend
from project.deploy.benchmark import PeakMemory, TimingSettings, benchmark_engines
from project.deploy.bundle import library_versions, write_bundle
from project.deploy.parity import ParityData, Tolerance, compare, run_engine, tolerance_for, tolerances_from_config
from project.deploy.report import log_to_loggers, print_table, write_json, write_markdown, write_plot

log = logging.getLogger(__name__)

BASELINE = "eager"  # eager fp32: the parity reference and the 1.0× of every speedup
OBJECTIVES = ("latency", "throughput")


@dataclass
class DeploySettings:
    """The `deploy` config group, validated (an unknown key is an error, not silently ignored)."""

    enabled: bool = True
    backend: str = "auto"
    objective: str = "latency"
    backends: list[Any] = field(default_factory=lambda: ["eager", "onnxruntime", "openvino", "openvino_bf16"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32, 256])
    threads: int | None = None
    device: str = "auto"
    roundtrip: bool = True
    timing: TimingSettings = field(default_factory=TimingSettings)
    parity_max_samples: int | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: tolerances_from_config(None))
    bundle: bool = True
    fallbacks: int = 1
    plot: bool = True
    strict: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> DeploySettings:
        values = dict(plain(config) or {})
        parity = dict(values.pop("parity", None) or {})
        known = {f.name for f in fields(cls)} - {"timing", "tolerances", "parity_max_samples"}
        unknown = set(values) - known - {"timing"}
        if unknown:
            raise ValueError(f"unknown deploy keys {sorted(unknown)}; known: {sorted(known | {'timing', 'parity'})}")
        settings = cls(**{k: v for k, v in values.items() if k != "timing"})
        settings.timing = TimingSettings.from_mapping(values.get("timing"))
        settings.parity_max_samples = parity.pop("max_samples", None)
        settings.tolerances = tolerances_from_config(parity.pop("tolerances", None))
        if parity:
            raise ValueError(f"unknown deploy.parity keys {sorted(parity)}; known: ['max_samples', 'tolerances']")
        settings.batch_sizes = sorted({int(b) for b in settings.batch_sizes})
        if not settings.batch_sizes or settings.batch_sizes[0] < 1:
            raise ValueError(f"deploy.batch_sizes must be positive integers, got {settings.batch_sizes}")
        if settings.objective not in OBJECTIVES:
            raise ValueError(f"deploy.objective={settings.objective!r}: expected one of {OBJECTIVES}")
        return settings


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def machine_info(threads: int, device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu, cores = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            fields_ = [line.split(":", 1) for line in f if ":" in line]
        values = {k.strip(): v.strip() for k, v in fields_ if k.strip() == "model name"}
        cpu = values.get("model name", cpu)
        # physical cores: distinct (socket, core) pairs; hyper-threads share one
        ids, socket = set(), "0"
        for key, value in ((k.strip(), v.strip()) for k, v in fields_):
            if key == "physical id":
                socket = value
            elif key == "core id":
                ids.add((socket, value))
        cores = len(ids) or None
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "physical_cores": cores,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "cpu_bf16": bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
        "cpu_amx": bool(torch.cpu._is_amx_tile_supported()),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "versions": library_versions(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
    return info


def backend_list(entries: Iterable[Any]) -> list[Backend]:
    """Parse `deploy.backends`, eager fp32 first (added when missing), names unique."""
    backends = [parse_backend(e) for e in entries]
    if not any(b.name == BASELINE for b in backends):
        backends.insert(0, parse_backend(BASELINE))
    backends.sort(key=lambda b: b.name != BASELINE)
    names = [b.name for b in backends]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"deploy.backends names must be unique; repeated: {duplicates}")
    return backends


def bench_inputs(data: ParityData, sizes: Iterable[int]) -> dict[int, torch.Tensor]:
    """One input tensor per batch size, cut from the parity images (tiled when there are too few), shared
    by every engine so they all see the very same bytes."""
    images = torch.cat(data.batches)
    out = {}
    for bs in sizes:
        reps = -(-bs // len(images))
        out[bs] = (images.repeat(reps, 1, 1, 1) if reps > 1 else images)[:bs].contiguous()
    return out


def choose(
    report: Mapping[str, Any], objective: str, sizes: list[int], wanted: str = "auto"
) -> tuple[str | None, str, list[str]]:
    """The fastest engine that passed parity for the objective → (name, why, all passing in speed order).
    `latency`: lowest median time at the smallest batch; `throughput`: most images/s at the largest."""
    bs = sizes[0] if objective == "latency" else sizes[-1]

    def score(name: str) -> float:
        point = report["backends"][name]["batches"][str(bs)]
        return point["latency_ms"]["p50"] if objective == "latency" else -point["throughput"]["median"]

    passing = [n for n, e in report["backends"].items() if e["status"] == "ok" and e.get("batches")]
    ranked = sorted(passing, key=score)
    if not ranked:
        return None, "no engine passed parity and benchmarking", []
    best = ranked[0]
    point = report["backends"][best]["batches"][str(bs)]
    figure = (
        f"{point['latency_ms']['p50']:.3f} ms p50 at batch {bs}"
        if objective == "latency"
        else f"{point['throughput']['median']:,.0f} img/s at batch {bs}"
    )
    speedup = f", {point['speedup']:.2f}× eager fp32" if point.get("speedup") else ""
    why = f"fastest engine that passed parity for {objective}: {figure}{speedup}"
    if wanted != "auto":
        if wanted in passing:
            ranked.remove(wanted)
            ranked.insert(0, wanted)
            return wanted, f"requested (deploy.backend={wanted}); the fastest passing was {best}", ranked
        why = f"deploy.backend={wanted} is not an engine that passed parity here; auto: {why}"
    return best, why, ranked


def bundle_order(report: Mapping[str, Any], ranked: list[str], fallbacks: int) -> list[str]:
    """The chosen engine, then up to `fallbacks` more passing engines, fastest first, each of a kind not
    yet in the list (a different runtime is what helps where the first cannot load) and never eager:
    the bundle falls back to eager fp32 by itself, from its weights file."""
    order = ranked[:1]
    kinds = {report["backends"][n]["kind"] for n in order} | {"eager"}
    for name in ranked[1:]:
        if len(order) > fallbacks:
            break
        kind = report["backends"][name]["kind"]
        if kind not in kinds:
            order.append(name)
            kinds.add(kind)
    return order


class Progress:
    """Progress lines while engines build and run (they take seconds to minutes)."""

    def __init__(self, callback: Callable[[str], None] | None = None) -> None:
        self.callback = callback

    def __call__(self, message: str) -> None:
        log.info("deploy: %s", message)
        if self.callback:
            self.callback(message)


def prepare_engine(
    backend: Backend,
    net: nn.Module,
    device: torch.device,
    data: ParityData,
    reference: torch.Tensor | None,
    settings: DeploySettings,
    work: Path,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], Engine | None, torch.Tensor | None]:
    """Build one engine, save and reload it (`roundtrip`), check parity against `reference` (None: this is
    the baseline, its own logits become the reference). Never raises: a failure is the entry's status.
    Returns the report entry, the engine (None if it failed) and its logits on the parity data."""
    entry: dict[str, Any] = {"kind": backend.kind, "precision": backend.precision, "options": dict(backend.options)}
    entry.update(status="failed", reason=None)
    try:
        reason = backend.unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        say(f"building {backend.name}")
        with PeakMemory() as memory:
            start = time.perf_counter()
            # a private copy: a backend may convert the module it is given (eager channels_last does, in place)
            on_device = copy.deepcopy(net).to(device if backend.kind in ("eager", "inductor") else "cpu")
            engine = backend.build(on_device, data.batches[0][:2], settings.batch_sizes[-1])
            entry["build_s"] = round(time.perf_counter() - start, 3)
            if settings.roundtrip:
                start = time.perf_counter()
                folder = work / backend.name
                folder.mkdir(parents=True, exist_ok=True)
                files = backend.save(engine, folder)
                engine = backend.load(folder, copy.deepcopy(net).to(device))
                entry["roundtrip_s"] = round(time.perf_counter() - start, 3)
                entry["files"] = files
                entry["files_mb"] = round(sum((folder / f).stat().st_size for f in files) / 2**20, 2)
            entry["options"] = dict(backend.options)  # a build may record what it resolved (device)
            logits = run_engine(engine, data)
            reference = logits if reference is None else reference
            tolerance = tolerance_for(backend.precision, settings.tolerances)
            entry["parity"] = {**compare(logits, reference, data.labels, tolerance), "data": data.source}
        entry["memory"] = memory.as_dict()
        entry["status"] = "ok" if entry["parity"]["passed"] else "parity_failed"
        entry["reason"] = entry["parity"].get("reason")
        verdict = "passed" if entry["status"] == "ok" else f"FAILED ({entry['reason']})"
        say(f"{backend.name}: built in {entry['build_s']:.2f} s, parity {verdict}")
        return entry, engine, logits
    except BackendUnavailable as exc:
        entry.update(status="unavailable", reason=str(exc))
        say(f"{backend.name}: unavailable ({exc})")
    except Exception as exc:
        entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        log.warning("deploy: %s failed: %s", backend.name, entry["reason"], exc_info=log.isEnabledFor(logging.DEBUG))
    return entry, None, None


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
) -> dict[str, Any]:
    """Build, verify, time and choose; write benchmark.{json,md,png} and the deploy bundle into
    `output_dir`. Returns the report (what benchmark.json holds)."""
    say = Progress(progress)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    threads = int(settings.threads or torch.get_num_threads())
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    device = resolve_device(settings.device)
    work = output_dir / ".deploy_work"
    shutil.rmtree(work, ignore_errors=True)
    net = net.float().eval().cpu()
    shape = [int(input_spec["channels"]), int(input_spec["height"]), int(input_spec["width"])]
    try:
        backends = backend_list(settings.backends) + list(extra_backends)
        if data is None:
            gen = torch.Generator().manual_seed(0)
            images = torch.randn((512, *shape), generator=gen)
            with torch.inference_mode():
                labels = net(images).argmax(1)
            data = ParityData([images], labels, "random inputs, eager fp32 predictions as labels (no test data)")
        if settings.parity_max_samples:
            images = torch.cat(data.batches)[: settings.parity_max_samples]
            data = ParityData([images], data.labels[: settings.parity_max_samples], data.source)
        data = data.rebatch(settings.batch_sizes[-1])
        report: dict[str, Any] = {
            "format": 1,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "model": {
                "name": str(net_config.get("_target_", type(net).__name__)).rsplit(".", 1)[-1],
                "target": net_config.get("_target_"),
                "parameters": sum(p.numel() for p in net.parameters()),
                "input_shape": shape,
            },
            "machine": machine_info(threads, device),
            "settings": {
                "backend": settings.backend,
                "objective": settings.objective,
                "batch_sizes": settings.batch_sizes,
                "threads": threads,
                "device": str(device),
                "roundtrip": settings.roundtrip,
                "timing": vars(settings.timing).copy(),
                "tolerances": {k: vars(v).copy() for k, v in settings.tolerances.items()},
            },
            "parity_data": {"source": data.source, "samples": data.count},
            "baseline": BASELINE,
            "backends": {},
        }
        engines: dict[str, Engine] = {}
        by_name = {b.name: b for b in backends}
        reference: torch.Tensor | None = None
        for backend in backends:
            backend.threads = threads
            entry, engine, logits = prepare_engine(backend, net, device, data, reference, settings, work, say)
            report["backends"][backend.name] = entry
            if engine is not None:
                engines[backend.name] = engine
            if backend.name == BASELINE:
                if logits is None:
                    raise RuntimeError(f"the eager fp32 baseline failed: {entry['reason']}")
                reference = logits

        say(f"timing {len(engines)} engines at batch sizes {settings.batch_sizes}")
        inputs = bench_inputs(data, settings.batch_sizes)
        results, errors = benchmark_engines(engines, inputs, settings.timing, progress=say)
        for name, error in errors.items():
            report["backends"][name].update(status="failed", reason=f"while timing: {error}")
        baseline = results.get(BASELINE, {})
        for name, per_bs in results.items():
            entry = report["backends"][name]
            entry["batches"] = {}
            for bs, point in per_bs.items():
                ref = baseline.get(bs)
                point["speedup"] = ref["latency_ms"]["p50"] / point["latency_ms"]["p50"] if ref else None
                entry["batches"][str(bs)] = point

        chosen, why, ranked = choose(report, settings.objective, settings.batch_sizes, settings.backend)
        report["chosen"], report["chosen_reason"], report["ranking"] = chosen, why, ranked
        say(f"chosen: {chosen} ({why})")

        if settings.bundle and chosen is not None:
            order = bundle_order(report, ranked, int(settings.fallbacks))
            try:
                bundle = write_bundle(
                    output_dir / "deploy",
                    net,
                    dict(net_config),
                    dict(input_spec),
                    engines=[(by_name[n], engines[n]) for n in order],
                    benchmark=report,
                )
                report["bundle"] = {"path": str(bundle), "engines": order}
                say(f"deploy bundle written to {bundle} (engines in fallback order: {', '.join(order)})")
            except Exception as exc:
                report["bundle"] = {"error": f"{type(exc).__name__}: {exc}"}
                log.error("deploy: could not write the bundle: %s", report["bundle"]["error"])
                if settings.strict:
                    raise
        write_json(report, output_dir / "benchmark.json")
        write_markdown(report, output_dir / "benchmark.md")
        if settings.plot:
            try:
                write_plot(report, output_dir / "benchmark.png")
            except Exception as exc:
                log.warning("deploy: could not draw benchmark.png: %s", exc)
        log_to_loggers(report, loggers)
        print_table(report)
        return report
    finally:
        torch.set_num_threads(previous_threads)
        shutil.rmtree(work, ignore_errors=True)
