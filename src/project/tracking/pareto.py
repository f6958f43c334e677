"""The accuracy-versus-speed trade-off of a sweep as one picture: `pareto.png`.

Left: accuracy against batch-1 latency (lower is better); right: accuracy against throughput (higher is
better). Runs no other run beats on both axes are the Pareto front: drawn larger, joined, and labelled.
Without benchmark figures (post-fit step off), model size in parameters stands in for latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from project.atomic import atomic_path


def pareto_mask(points: Sequence[tuple[float, float]], maximize: tuple[bool, bool] = (True, False)) -> list[bool]:
    """For each (a, b): True when no other point is at least as good on both and better on one."""

    def better_or_equal(x: float, y: float, up: bool) -> bool:
        return x >= y if up else x <= y

    mask = []
    for i, p in enumerate(points):
        dominated = any(
            all(better_or_equal(q[k], p[k], maximize[k]) for k in (0, 1)) and q != p
            for j, q in enumerate(points)
            if j != i
        )
        mask.append(not dominated)
    return mask


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _panel(ax: Any, rows: list[dict[str, Any]], x_key: str, y_key: str, x_up: bool, x_label: str, y_label: str) -> int:
    """Scatter one panel; returns how many runs it shows."""
    usable = [r for r in rows if _finite(r.get(x_key)) and _finite(r.get(y_key))]
    if not usable:
        ax.text(0.5, 0.5, f"no runs with {x_label}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return 0
    points = [(float(r[y_key]), float(r[x_key])) for r in usable]
    front = pareto_mask(points, maximize=(True, x_up))
    xs, ys = [p[1] for p in points], [p[0] for p in points]
    if not all(front):
        ax.scatter(
            [x for x, f in zip(xs, front, strict=True) if not f],
            [y for y, f in zip(ys, front, strict=True) if not f],
            c="tab:gray",
            alpha=0.6,
            label="dominated",
        )
    on_front = sorted((x, y, r) for x, y, r, f in zip(xs, ys, usable, front, strict=True) if f)
    # the staircase bounds what the sweep reached: nothing above-left of it (above-right for throughput)
    ax.plot(
        [p[0] for p in on_front],
        [p[1] for p in on_front],
        "-o",
        c="tab:red",
        ms=8,
        drawstyle="steps-post" if not x_up else "steps-pre",
        label="Pareto-optimal",
    )
    for x, y, row in on_front:
        # the shipped engine's precision when it is not fp32 (an int8 engine trades accuracy for speed)
        precision = f" [{row['precision']}]" if row.get("precision") not in (None, "fp32") else ""
        label = str(row.get("label") or row.get("job")) + precision
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if all(x > 0 for x in xs) and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return len(usable)


def plot_pareto(rows: list[dict[str, Any]], path: str | Path, accuracy_key: str, title: str = "") -> Path:
    """Draw `pareto.png` from leaderboard rows (keys: accuracy_key, latency_p50_ms, throughput, params,
    label). Returns the path."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    has_latency = any(_finite(r.get("latency_p50_ms")) for r in rows)
    has_throughput = any(_finite(r.get("throughput")) for r in rows)
    fig = Figure(figsize=(12 if has_throughput else 7, 4.8))
    axes = fig.subplots(1, 2 if has_throughput else 1, squeeze=False)[0]
    if has_latency:
        _panel(axes[0], rows, "latency_p50_ms", accuracy_key, False, "batch-1 latency p50 (ms)", accuracy_key)
    else:
        _panel(axes[0], rows, "params", accuracy_key, False, "parameters (no benchmark.json)", accuracy_key)
    if has_throughput:
        _panel(axes[1], rows, "throughput", accuracy_key, True, "throughput at max batch (images/s)", accuracy_key)
    fig.suptitle(title or f"{accuracy_key} vs inference speed")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
