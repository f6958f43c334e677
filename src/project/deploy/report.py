"""The benchmark's outputs: `benchmark.json` for machines, `benchmark.md` for people, `benchmark.png` for a
glance, the same figures in the active loggers (`deploy/<backend>/<figure>`), and a table on the console."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATUS_TEXT = {
    "ok": "ok",
    "parity_failed": "FAILED parity",
    "unavailable": "unavailable",
    "failed": "failed",
}


def batch_sizes(report: Mapping[str, Any]) -> list[int]:
    return [int(b) for b in report["settings"]["batch_sizes"]]


def _point(entry: Mapping[str, Any], bs: int) -> Mapping[str, Any] | None:
    return (entry.get("batches") or {}).get(str(bs))


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _parity_text(entry: Mapping[str, Any]) -> str:
    parity = entry.get("parity")
    if not parity or "top1_agreement" not in parity:
        return (parity or {}).get("reason") or "–"
    text = f"{parity['top1_agreement'] * 100:.2f}% / {parity['max_abs_diff']:.2g} / {parity['acc_delta']:+.2f}"
    return text if parity["passed"] else f"**{text}** ✗"


def write_json(report: Mapping[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def markdown(report: Mapping[str, Any]) -> str:
    """The report as a person reads it: what ran where, what was chosen and why, then the tables."""
    sizes = batch_sizes(report)
    machine, settings = report["machine"], report["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if k != "python")
    lines = [
        f"# Inference benchmark: {report['model']['name']}",
        "",
        f"- model: `{report['model']['target']}`, {report['model']['parameters']:,} parameters, "
        f"input {'×'.join(str(d) for d in report['model']['input_shape'])}",
        f"- checkpoint: `{report.get('checkpoint') or 'none (random weights)'}`",
        f"- machine: {machine['cpu']} ({machine.get('physical_cores') or '?'} cores, {machine['logical_cpus']} logical "
        f"CPUs), GPU: {machine.get('gpu') or 'none'}; "
        f"{settings['threads']} threads for every engine",
        f"- versions: {versions}",
        f"- parity data: {report['parity_data']['source']} ({report['parity_data']['samples']} images)",
        f"- timing: ≥{settings['timing']['min_iters']} calls and ≥{settings['timing']['min_duration_s']} s per point, "
        f"{settings['timing']['warmup_iters']} warm-up calls, {settings['timing']['rounds']} interleaved round(s)",
        "",
    ]
    chosen = report.get("chosen")
    if chosen:
        lines.append(f"**Chosen engine: `{chosen}`**: {report.get('chosen_reason', '')}")
    else:
        lines.append("**No engine chosen**: " + report.get("chosen_reason", ""))
    lines += [
        "",
        "## Engines",
        "",
        "| engine | status | parity: top-1 agreement / max abs logit diff / accuracy Δ (pts) | build s | "
        "save+load s | host peak MB (+Δ) | note |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for name, entry in report["backends"].items():
        memory = entry.get("memory") or {}
        mem = (
            f"{_fmt(memory.get('host_peak_mb'))} (+{_fmt(memory.get('host_increase_mb'))})"
            if memory.get("host_peak_mb") is not None
            else "–"
        )
        if memory.get("cuda_peak_mb") is not None:
            mem += f", CUDA {_fmt(memory['cuda_peak_mb'])}"
        note = entry.get("reason") or ""
        lines.append(
            f"| {name} | {STATUS_TEXT.get(entry['status'], entry['status'])} | {_parity_text(entry)} | "
            f"{_fmt(entry.get('build_s'), 2)} | {_fmt(entry.get('roundtrip_s'), 2)} | {mem} | {note} |"
        )
    timed = {n: e for n, e in report["backends"].items() if e.get("batches")}
    if sizes and timed:
        first = sizes[0]
        lines += [
            "",
            f"## Latency at batch {first} (ms per call)",
            "",
            "| engine | p50 | p90 | p99 | min | max | speedup (p50) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, entry in timed.items():
            point = _point(entry, first)
            lat = point["latency_ms"]
            lines.append(
                f"| {name} | {lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | {lat['min']:.3f} | "
                f"{lat['max']:.3f} | {_times(point['speedup'])} |"
            )
        lines += [
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
                tp = _point(entry, bs)["throughput"]
                cells.append(f"{tp['median']:,.0f} [{tp['min']:,.0f} – {tp['max']:,.0f}]")
                speedups.append(_times(_point(entry, bs)["speedup"]))
            lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(speedups) + " |")
    lines += [
        "",
        "Speedups are relative to eager fp32 in the same run (median call time). Engines that failed parity are "
        "measured and shown, never chosen. Build time is reported apart from inference time.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(report: Mapping[str, Any], path: Path) -> Path:
    path.write_text(markdown(report))
    return path


def write_plot(report: Mapping[str, Any], path: Path) -> Path | None:
    """Two panels: throughput per engine per batch size (log scale), and speedup over eager fp32."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = batch_sizes(report)
    timed = {n: e for n, e in report["backends"].items() if e.get("batches")}
    if not timed or not sizes:
        return None
    names = list(timed)
    x = np.arange(len(names))
    width = 0.8 / len(sizes)
    fig, (ax_tp, ax_sp) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(names) + 4), 4.8))
    for i, bs in enumerate(sizes):
        tp = [_point(timed[n], bs)["throughput"] for n in names]
        median = np.array([t["median"] for t in tp])
        spread = np.array(
            [
                [m - t["min"] for m, t in zip(median, tp, strict=True)],
                [t["max"] - m for m, t in zip(median, tp, strict=True)],
            ]
        )
        ax_tp.bar(x + i * width, median, width, yerr=spread, capsize=2, label=f"batch {bs}")
        speedups = [_point(timed[n], bs)["speedup"] or 0.0 for n in names]
        ax_sp.bar(x + i * width, speedups, width, label=f"batch {bs}")
    for ax in (ax_tp, ax_sp):
        ax.set_xticks(x + width * (len(sizes) - 1) / 2)
        labels = [n + ("\n(failed parity)" if timed[n]["status"] != "ok" else "") for n in names]
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    ax_tp.set_yscale("log")
    ax_tp.set_ylabel("images / s (median; bars: slowest–fastest call)")
    ax_tp.set_title("Throughput")
    ax_sp.axhline(1.0, color="black", linewidth=0.8)
    ax_sp.set_ylabel("× eager fp32")
    ax_sp.set_title("Speedup over eager fp32")
    chosen = report.get("chosen")
    fig.suptitle(f"{report['model']['name']}: chosen engine {chosen or 'none'} ({report['settings']['objective']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Flat numeric figures, `deploy/<backend>/<figure>`, for any logger."""
    metrics: dict[str, float] = {}
    for name, entry in report["backends"].items():
        prefix = f"deploy/{name}"
        metrics[f"{prefix}/passed"] = float(entry["status"] == "ok")
        if entry.get("build_s") is not None:
            metrics[f"{prefix}/build_s"] = float(entry["build_s"])
        parity = entry.get("parity") or {}
        for key in ("top1_agreement", "max_abs_diff", "acc_delta"):
            if key in parity:
                metrics[f"{prefix}/{key}"] = float(parity[key])
        if (entry.get("memory") or {}).get("host_peak_mb") is not None:
            metrics[f"{prefix}/host_peak_mb"] = float(entry["memory"]["host_peak_mb"])
        for bs, point in (entry.get("batches") or {}).items():
            metrics[f"{prefix}/throughput_b{bs}"] = float(point["throughput"]["median"])
            if point.get("speedup") is not None:
                metrics[f"{prefix}/speedup_b{bs}"] = float(point["speedup"])
            for pct in ("p50", "p90", "p99"):
                metrics[f"{prefix}/latency_{pct}_ms_b{bs}"] = float(point["latency_ms"][pct])
    return metrics


def table_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per engine (status, parity, latency, throughput per batch): the console and W&B table."""
    sizes = batch_sizes(report)
    columns = ["engine", "status", "top1_agreement", "acc_delta", "build_s", "p50_ms_b1"]
    columns += [f"img_s_b{bs}" for bs in sizes] + [f"speedup_b{bs}" for bs in sizes]
    rows = []
    for name, entry in report["backends"].items():
        parity = entry.get("parity") or {}
        first = _point(entry, sizes[0]) if sizes else None
        row = [
            name,
            entry["status"],
            parity.get("top1_agreement"),
            parity.get("acc_delta"),
            entry.get("build_s"),
            first["latency_ms"]["p50"] if first else None,
        ]
        row += [(_point(entry, bs) or {}).get("throughput", {}).get("median") for bs in sizes]
        row += [(_point(entry, bs) or {}).get("speedup") for bs in sizes]
        rows.append(row)
    return columns, rows


def log_to_loggers(report: Mapping[str, Any], loggers: Iterable[Any], step: int | None = None) -> None:
    """Summary metrics into every Lightning logger; a `wandb.Table` of the engines where W&B is active."""
    metrics = summary_metrics(report)
    for logger in loggers:
        try:
            logger.log_metrics(metrics, step=step)
            if type(logger).__name__ == "WandbLogger":
                import wandb

                columns, rows = table_rows(report)
                logger.experiment.log({"deploy/benchmark": wandb.Table(columns=columns, data=rows)})
                logger.experiment.summary["deploy/chosen"] = report.get("chosen")
            logger.save()
        except Exception as exc:  # a logger hiccup must not lose the files already written
            log.warning("could not log deploy results to %s: %s", type(logger).__name__, exc)


def print_table(report: Mapping[str, Any]) -> None:
    import sys

    import rich.console
    import rich.table

    # a log file or pipe gets a wide table rather than rich's 80-column default
    console = rich.console.Console(width=None if sys.stdout.isatty() else 160)

    sizes = batch_sizes(report)
    table = rich.table.Table(
        title=f"inference engines: {report['model']['name']} ({report['settings']['threads']} threads)"
    )
    for col in ("engine", "status", "parity (agree / Δacc)", "build s", f"b{sizes[0]} p50 ms" if sizes else "p50"):
        table.add_column(col, justify="left" if col in ("engine", "status") else "right")
    for bs in sizes:
        table.add_column(f"img/s b{bs}", justify="right")
    for bs in sizes:
        table.add_column(f"× b{bs}", justify="right")
    for name, entry in report["backends"].items():
        parity = entry.get("parity") or {}
        parity_text = (
            f"{parity['top1_agreement'] * 100:.2f}% / {parity['acc_delta']:+.2f}" if "top1_agreement" in parity else "–"
        )
        first = _point(entry, sizes[0]) if sizes else None
        style = "bold green" if name == report.get("chosen") else ("red" if entry["status"] != "ok" else None)
        cells = [
            name + (" ★" if name == report.get("chosen") else ""),
            STATUS_TEXT.get(entry["status"], entry["status"]),
            parity_text,
            _fmt(entry.get("build_s"), 2),
            f"{first['latency_ms']['p50']:.3f}" if first else "–",
        ]
        cells += [_fmt((_point(entry, bs) or {}).get("throughput", {}).get("median")) for bs in sizes]
        cells += [_times(_point(entry, bs)["speedup"]) if _point(entry, bs) else "–" for bs in sizes]
        table.add_row(*cells, style=style)
    console.print(table)
    for name, entry in report["backends"].items():
        if entry["status"] != "ok":
            console.print(f"  {name}: {STATUS_TEXT.get(entry['status'], entry['status'])}: {entry.get('reason')}")
    console.print(f"chosen engine: {report.get('chosen') or 'none'} ({report.get('chosen_reason', '')})")
