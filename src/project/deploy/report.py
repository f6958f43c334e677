"""The benchmark's outputs for people: `benchmark.md`, `benchmark.png`, the same figures in the active
loggers (`deploy/<backend>/<figure>`, and a W&B table), and a table on the console. Every renderer reads
a `BenchmarkReport`; `benchmark.json` itself is `BenchmarkReport.write`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from project.atomic import atomic_path, atomic_write_text
from project.deploy.results import BenchmarkReport, EngineResult

log = logging.getLogger(__name__)

STATUS_TEXT = {
    "ok": "ok",
    "parity_failed": "FAILED parity",
    "unavailable": "unavailable",
    "failed": "failed",
}


def _number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _status(entry: EngineResult) -> str:
    return STATUS_TEXT.get(entry.status, entry.status)


def _parity_markdown(entry: EngineResult) -> str:
    parity = entry.parity
    if parity is None or not parity.measured:
        return (parity.reason if parity else None) or "–"
    text = f"{parity.top1_agreement * 100:.2f}% / {parity.max_abs_diff:.2g} / {parity.acc_delta:+.2f}"
    return text if parity.passed else f"**{text}** ✗"


def _memory_markdown(entry: EngineResult) -> str:
    memory = entry.memory or {}
    if memory.get("host_peak_mb") is None:
        text = "–"
    else:
        text = f"{_number(memory.get('host_peak_mb'))} (+{_number(memory.get('host_increase_mb'))})"
    if memory.get("cuda_peak_mb") is not None:
        text += f", CUDA {_number(memory['cuda_peak_mb'])}"
    return text


def markdown(report: BenchmarkReport) -> str:
    """The report as a person reads it: what ran where, what was chosen and why, then the tables."""
    sizes = report.batch_sizes
    machine, settings, model, timing = report.machine, report.settings, report.model, report.settings["timing"]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if k != "python")
    lines = [
        f"# Inference benchmark: {model['name']}",
        "",
        f"- model: `{model['target']}`, {model['parameters']:,} parameters, "
        f"input {'×'.join(str(d) for d in model['input_shape'])}",
        f"- checkpoint: `{report.checkpoint or 'none (random weights)'}`",
        f"- machine: {machine['cpu']} ({machine.get('physical_cores') or '?'} cores, {machine['logical_cpus']} logical "
        f"CPUs), GPU: {machine.get('gpu') or 'none'}; "
        f"{settings['threads']} threads for every engine",
        f"- versions: {versions}",
        f"- parity data: {report.parity_data['source']} ({report.parity_data['samples']} images)",
        f"- timing: ≥{timing['min_iters']} calls and ≥{timing['min_duration_s']} s per point, "
        f"{timing['warmup_iters']} warm-up calls, {timing['rounds']} interleaved round(s)",
        "",
    ]
    if report.chosen:
        lines.append(f"**Chosen engine: `{report.chosen}`**: {report.chosen_reason or ''}")
    else:
        lines.append("**No engine chosen**: " + (report.chosen_reason or ""))
    lines += [
        "",
        "## Engines",
        "",
        "| engine | status | parity: top-1 agreement / max abs logit diff / accuracy Δ (pts) | build s | "
        "calibration: images / s | save+load s | files MB | host peak MB (+Δ) | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in report.engines.items():
        calibration = f"{entry.calibration_samples} / {entry.calibration_s:.2f}" if entry.calibration_s else "–"
        cells = [_status(entry), _parity_markdown(entry), _number(entry.build_s, 2), calibration]
        cells += [_number(entry.roundtrip_s, 2), entry.files_mb or "–", _memory_markdown(entry), entry.reason or ""]
        lines.append(f"| {name} | " + " | ".join(map(str, cells)) + " |")
    timed = report.timed
    if sizes and timed:
        lines += _latency_lines(timed, sizes[0]) + _throughput_lines(timed, sizes)
    lines += [
        "",
        "Speedups are relative to eager fp32 in the same run (median call time). Engines that failed parity are "
        "measured and shown, never chosen. Build time is reported apart from inference time.",
        "",
    ]
    return "\n".join(lines)


def _latency_lines(timed: dict[str, EngineResult], first: int) -> list[str]:
    lines = [
        "",
        f"## Latency at batch {first} (ms per call)",
        "",
        "| engine | p50 | p90 | p99 | min | max | speedup (p50) | bare library p50 | wrapper overhead |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in timed.items():
        point = entry.points[first]
        lat = point.latency_ms
        bare = entry.bare_point(first).p50_ms if entry.bare_point(first) else None
        overhead = f"{lat['p50'] / bare:.2f}×" if bare else "–"
        lines.append(
            f"| {name} | {lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | {lat['min']:.3f} | "
            f"{lat['max']:.3f} | {_times(point.speedup)} | {_number(bare, 3) if bare else '–'} | {overhead} |"
        )
    return lines


def _throughput_lines(timed: dict[str, EngineResult], sizes: list[int]) -> list[str]:
    lines = [
        "",
        "## Throughput (images/s: median call [slowest – fastest call]) and speedup over eager fp32",
        "",
        "| engine | "
        + " | ".join(f"batch {bs}" for bs in sizes)
        + " | "
        + " | ".join(f"× b{bs}" for bs in sizes)
        + " |",
        "|---|" + "---:|" * (2 * len(sizes)),
    ]
    for name, entry in timed.items():
        cells, speedups = [], []
        for bs in sizes:
            point = entry.points[bs]
            tp = point.throughput
            cells.append(f"{tp['median']:,.0f} [{tp['min']:,.0f} – {tp['max']:,.0f}]")
            speedups.append(_times(point.speedup))
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(speedups) + " |")
    return lines


def write_benchmark_markdown(report: BenchmarkReport, path: Path) -> Path:
    atomic_write_text(path, markdown(report))
    return path


def write_plot(report: BenchmarkReport, path: Path) -> Path | None:
    """Two panels: throughput per engine per batch size (log scale), and speedup over eager fp32."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    sizes, timed = report.batch_sizes, report.timed
    if not timed or not sizes:
        return None
    names = list(timed)
    x = np.arange(len(names))
    width = 0.8 / len(sizes)
    fig, (ax_tp, ax_sp) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(names) + 4), 4.8))
    for i, bs in enumerate(sizes):
        tp = [timed[n].points[bs].throughput for n in names]
        median = np.array([t["median"] for t in tp])
        spread = np.array(
            [
                [m - t["min"] for m, t in zip(median, tp, strict=True)],
                [t["max"] - m for m, t in zip(median, tp, strict=True)],
            ]
        )
        ax_tp.bar(x + i * width, median, width, yerr=spread, capsize=2, label=f"batch {bs}")
        speedups = [timed[n].points[bs].speedup or 0.0 for n in names]
        ax_sp.bar(x + i * width, speedups, width, label=f"batch {bs}")
    for ax in (ax_tp, ax_sp):
        ax.set_xticks(x + width * (len(sizes) - 1) / 2)
        labels = [f"{n}\n{timed[n].files_mb or 0:g} MB" + ("" if timed[n].passed else "\n✗ parity") for n in names]
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax_tp.set_yscale("log")
    ax_tp.set_ylabel("images / s (median; bars: slowest–fastest call)")
    ax_tp.set_title("Throughput")
    ax_sp.axhline(1.0, color="black", linewidth=0.8)
    ax_sp.set_ylabel("× eager fp32")
    ax_sp.set_title("Speedup over eager fp32")
    fig.suptitle(f"{report.model['name']}: chosen engine {report.chosen or 'none'} ({report.settings['objective']})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def summary_metrics(report: BenchmarkReport) -> dict[str, float]:
    """Flat numeric figures, `deploy/<backend>/<figure>`, for any logger."""
    metrics: dict[str, float] = {}
    for name, entry in report.engines.items():
        prefix = f"deploy/{name}"
        metrics[f"{prefix}/passed"] = float(entry.passed)
        for key in ("build_s", "calibration_s", "calibration_samples", "file_bytes"):
            if getattr(entry, key) is not None:
                metrics[f"{prefix}/{key}"] = float(getattr(entry, key))
        if entry.parity is not None:
            for key in ("top1_agreement", "max_abs_diff", "acc_delta"):
                if getattr(entry.parity, key) is not None:
                    metrics[f"{prefix}/{key}"] = float(getattr(entry.parity, key))
        if (entry.memory or {}).get("host_peak_mb") is not None:
            metrics[f"{prefix}/host_peak_mb"] = float(entry.memory["host_peak_mb"])
        for bs, point in entry.points.items():
            metrics[f"{prefix}/throughput_b{bs}"] = float(point.throughput["median"])
            if point.speedup is not None:
                metrics[f"{prefix}/speedup_b{bs}"] = float(point.speedup)
            for pct in ("p50", "p90", "p99"):
                metrics[f"{prefix}/latency_{pct}_ms_b{bs}"] = float(point.latency_ms[pct])
    return metrics


def engine_table(report: BenchmarkReport) -> tuple[list[str], list[list[Any]]]:
    """One row of raw figures per engine (status, parity, latency, throughput and speedup per batch size):
    the W&B table as it is, and the console table once formatted."""
    sizes = report.batch_sizes
    columns = ["engine", "status", "top1_agreement", "acc_delta", "build_s", "p50_ms_b1"]
    columns += [f"img_s_b{bs}" for bs in sizes] + [f"speedup_b{bs}" for bs in sizes]
    rows = []
    for name, entry in report.engines.items():
        parity = entry.parity
        points = [entry.point(bs) for bs in sizes]
        row = [
            name,
            entry.status,
            parity.top1_agreement if parity else None,
            parity.acc_delta if parity else None,
            entry.build_s,
            points[0].p50_ms if points and points[0] else None,
        ]
        row += [p.images_per_s if p else None for p in points]
        row += [p.speedup if p else None for p in points]
        rows.append(row)
    return columns, rows


def log_to_loggers(report: BenchmarkReport, loggers: Iterable[Any], step: int | None = None) -> None:
    """Summary metrics into every Lightning logger; a `wandb.Table` of the engines where W&B is active."""
    metrics = summary_metrics(report)
    for logger in loggers:
        try:
            logger.log_metrics(metrics, step=step)
            if type(logger).__name__ == "WandbLogger":
                import wandb

                columns, rows = engine_table(report)
                logger.experiment.log({"deploy/benchmark": wandb.Table(columns=columns, data=rows)})
                logger.experiment.summary["deploy/chosen"] = report.chosen
            logger.save()
        except Exception as exc:  # a logger hiccup must not lose the files already written
            log.warning("could not log deploy results to %s: %s", type(logger).__name__, exc)


def print_table(report: BenchmarkReport) -> None:
    """The engine table on the console, the chosen engine highlighted, failures explained below it."""
    import rich.console
    import rich.table

    # a log file or pipe gets a wide table rather than rich's 80-column default
    console = rich.console.Console(width=None if sys.stdout.isatty() else 160)
    sizes = report.batch_sizes
    table = rich.table.Table(title=f"inference engines: {report.model['name']} ({report.settings['threads']} threads)")
    for col in ("engine", "status", "parity (agree / Δacc)", "build s", f"b{sizes[0]} p50 ms" if sizes else "p50"):
        table.add_column(col, justify="left" if col in ("engine", "status") else "right")
    for bs in sizes:
        table.add_column(f"img/s b{bs}", justify="right")
    for bs in sizes:
        table.add_column(f"× b{bs}", justify="right")
    _, rows = engine_table(report)
    for (name, status, agreement, acc_delta, build_s, p50, *per_size), entry in zip(
        rows, report.engines.values(), strict=True
    ):
        chosen = name == report.chosen
        cells = [
            name + (" ★" if chosen else ""),
            _status(entry),
            "–" if agreement is None else f"{agreement * 100:.2f}% / {acc_delta:+.2f}",
            _number(build_s, 2),
            "–" if p50 is None else f"{p50:.3f}",
        ]
        cells += [_number(v) for v in per_size[: len(sizes)]] + [_times(v) for v in per_size[len(sizes) :]]
        table.add_row(*cells, style="bold green" if chosen else ("red" if status != "ok" else None))
    console.print(table)
    for name, entry in report.engines.items():
        if not entry.passed:
            console.print(f"  {name}: {_status(entry)}: {entry.reason}")
    console.print(f"chosen engine: {report.chosen or 'none'} ({report.chosen_reason or ''})")
