"""The benchmarks page, rendered from recorded `benchmark.json` files (figures are generated, not typed).

Each `docs/data/<name>.json` holds one `benchmark.json` as a benchmark command wrote it, with the command,
the commit, the CPU model and flags, and the date beside it. `python -m project.docs_benchmarks` renders
`docs/benchmarks.md` from them; `--record NAME "COMMAND"` runs a benchmark command and keeps its result;
`--refresh` re-runs every recorded command (on this machine, which the page then names); `--check` exits 1
when the page is not the rendering of the records (tests/test_docs_benchmarks.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DATA = Path("docs/data")
PAGE = Path("docs/benchmarks.md")
# the flags that decide which engines and precisions are fast on a CPU
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
# figures measured earlier on other machines, kept (dated, with their machine) on the page of their topic
EARLIER = [
    ("your-own-images.md", "Preparing a folder of JPEG photos vs a plain Pillow loop (AMD EPYC, AVX2 only)"),
    ("deploy/index.md#int8-engines", "INT8 engines vs eager fp32, resnet18 and cifar_fast (AMD EPYC, AVX2 only)"),
    ("deploy/index.md#int8-engines", "Every engine on cifar_fast (2-core Xeon with AVX-512-BF16/AMX)"),
    ("training.md#training-speed", "Training speed: plain loop vs the project's Trainer (2-core Xeon with AMX)"),
    ("inference.md", "HTTP serving: dynamic batching, the soak test (2-core machines named there)"),
    ("inference.md#batch-prediction-on-ray-data", "Batch prediction: local vs Ray runner (AMD EPYC)"),
    ("getting-started.md", "`make train` wall time and accuracy (Xeon with AMX; AMD EPYC)"),
]


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of NOTABLE_FLAGS it has (from /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown", []
    fields = dict(line.split(":", 1) for line in reversed(cpuinfo.splitlines()) if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", "unknown"), [f for f in NOTABLE_FLAGS if f in flags]


def _commit() -> str:
    run = lambda *args: subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = run("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")


def record(name: str, command: str, data: Path = DATA) -> Path:
    """Run a benchmark command (its run folder in a temporary place) and keep its benchmark.json."""
    with tempfile.TemporaryDirectory() as run_dir:
        argv = shlex.split(command)
        argv = [sys.executable if a == "python" else a for a in argv] + [f"hydra.run.dir={run_dir}"]
        subprocess.run(argv, check=True)
        benchmark = json.loads((Path(run_dir) / "benchmark.json").read_text())
    model, flags = cpu_model_and_flags()
    entry = {
        "command": command,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": model,
        "cpu_flags": flags,
        "benchmark": benchmark,
    }
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"{name}.json"
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def records(data: Path = DATA) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(data.glob("*.json"))}


def _engine_rows(benchmark: dict[str, Any]) -> list[str]:
    sizes = [str(b) for b in benchmark["settings"]["batch_sizes"]]
    small, large = sizes[0], sizes[-1]
    rows = [
        f"| engine | status | top-1 agreement / accuracy Δ | b{small} p50 ms | × eager b{small} "
        f"| b{large} img/s | × eager b{large} |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, engine in benchmark["backends"].items():
        parity, batches = engine.get("parity") or {}, engine.get("batches") or {}
        agree = f"{parity['top1_agreement']:.2%} / {parity['acc_delta']:+.2f}" if parity else "–"
        first, last = batches.get(small), batches.get(large)
        cells = [
            f"{first['latency_ms']['p50']:.3f}" if first else "–",
            f"{first['speedup']:.2f}×" if first else "–",
            f"{last['throughput']['median']:,.0f}" if last else "–",
            f"{last['speedup']:.2f}×" if last else "–",
        ]
        status = engine["status"] + (f": {engine['reason']}" if engine.get("reason") else "")
        chosen = "**" if name == benchmark.get("chosen") else ""
        rows.append(f"| {chosen}{name}{chosen} | {status} | {agree} | " + " | ".join(cells) + " |")
    return rows


def render(data: Path = DATA) -> str:
    """The whole benchmarks page as Markdown."""
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by `python -m project.docs_benchmarks` from docs/data/*.json: do not edit -->",
        "",
        "Every figure in this first part is rendered from a `benchmark.json` kept under `docs/data/`, with the",
        "command that produced it, the commit, the CPU model and flags, and the date. `make docs-benchmarks`",
        "re-runs every recorded command on the machine it runs on and renders this page again; record another",
        'with `python -m project.docs_benchmarks --record NAME "python -m project.benchmark ..."`. Speedups',
        "are against eager fp32 *in the same run*: compare ratios within one run, not absolute figures across",
        "machines or runs. How to read a benchmark: [Deploy](deploy/index.md#reading-the-benchmark).",
        "",
    ]
    for name, entry in records(data).items():
        bench, machine = entry["benchmark"], entry["benchmark"]["machine"]
        model = bench["model"]
        flags = ", ".join(entry["cpu_flags"]) or "none of " + ", ".join(NOTABLE_FLAGS)
        absent = [f for f in NOTABLE_FLAGS if f not in entry["cpu_flags"]]
        versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        shape = "×".join(str(d) for d in model["input_shape"])
        out += [
            f"## {name}: {model['name']} ({model['parameters']:,} parameters, input {shape})",
            "",
            f"- command: `{entry['command']}`",
            f"- commit `{entry['commit']}`, {entry['date']}",
            f"- CPU: {entry['cpu_model']}, {machine['physical_cores']} cores, {machine['threads']} threads per engine,"
            f" device {machine['device']}, GPU: {machine['gpu'] or 'none'}",
            f"- CPU flags: {flags}" + (f" (absent: {', '.join(absent)})" if absent else ""),
            f"- versions: {versions}",
            f"- parity data: {bench['parity_data']['source']} ({bench['parity_data']['samples']} images)",
            f"- chosen: `{bench['chosen']}`, {bench['chosen_reason']}",
            "",
            *_engine_rows(bench),
            "",
        ]
        if entry.get("note"):
            out += [entry["note"], ""]
    out += [
        "## Measured earlier, not regenerated",
        "",
        "These figures were measured by hand on other machines, before this page was generated; each table",
        "names its machine, its command and the versions, on the page of its topic. They are kept as measured",
        "and not re-run by `make docs-benchmarks`.",
        "",
        *[f"- [{title}]({link})" for link, title in EARLIER],
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", nargs=2, metavar=("NAME", "COMMAND"), help="run COMMAND, keep it as NAME")
    parser.add_argument("--refresh", action="store_true", help="re-run every recorded command, then render")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not the records' rendering")
    args = parser.parse_args(argv)
    if args.record:
        print(f"recorded {record(*args.record)}")
    if args.refresh:
        for name, entry in records().items():
            print(f"recorded {record(name, entry['command'])}")
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(f"{PAGE} is out of date: run python -m project.docs_benchmarks", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
