"""Batch prediction throughput: the local runner against the Ray runner on the same files.

Writes `--images` real digit PNGs (or uses `--inputs`), then runs `python -m project.predict` once per
runner as a user would (a fresh process each, so Ray's start-up is counted in the wall time) and reports
images/s two ways: the runner's own figure (prediction only, from its summary.json) and end to end (the
whole command, process start and model loading included):

    python benchmarks/batch_predict.py --bundle logs/train/runs/<run>/deploy
    python benchmarks/batch_predict.py --images 5000 --ray-concurrency 2 --ray-batch-size 128
    python benchmarks/batch_predict.py --ray-address auto        # an existing cluster

On one small machine Ray's start-up, scheduling and serialisation are pure overhead next to the local
runner; its value is the actor pool spread over many machines.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def newest_bundle() -> str | None:
    bundles = sorted(glob.glob("logs/train/runs/*/deploy/manifest.json"), key=os.path.getmtime)
    return str(Path(bundles[-1]).parent) if bundles else None


def write_digits(folder: Path, count: int) -> list[Path]:
    """`count` real digits (cycled over sklearn's 1797) as 8×8 PNGs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:06d}.png"
        Image.fromarray(np.clip(images[i % len(images)] * 16, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def run(runner: str, bundle: str, inputs: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `project.predict` command; its summary plus the command's wall time."""
    out = work / runner
    output = out / "shards" if runner == "ray" else out / "preds.jsonl"
    command = [
        sys.executable, "-m", "project.predict", f"bundle={bundle}", f"inputs={inputs}", f"output={output}",
        f"runner={runner}", f"batch_size={args.batch_size}", "progress=false", "fail_on_error=false",
    ]  # fmt: skip
    if runner == "ray":
        command += [
            f"ray.concurrency={args.ray_concurrency}", f"ray.batch_size={args.ray_batch_size}",
            f"ray.num_cpus_per_actor={args.ray_cpus_per_actor}", f"ray.format={args.ray_format}",
        ]  # fmt: skip
        if args.ray_address:
            command.append(f"ray.address={args.ray_address}")
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{runner} runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {**summary, "wall_s": round(wall, 2), "end_to_end_images_per_s": round(summary["count"] / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=newest_bundle(), help="deploy bundle (default: the newest run's)")
    parser.add_argument("--inputs", help="inputs as predict takes them (default: --images generated digits)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64, help="engine batch size (both runners)")
    parser.add_argument("--ray-concurrency", type=int, default=2)
    parser.add_argument("--ray-batch-size", type=int, default=256)
    parser.add_argument("--ray-cpus-per-actor", type=int, default=1)
    parser.add_argument("--ray-format", default="parquet", choices=["jsonl", "parquet"])
    parser.add_argument("--ray-address", help="join this cluster instead of starting a local instance")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per command")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.bundle:
        raise SystemExit("no bundle: pass --bundle PATH/TO/<run>/deploy (or train one: make train)")

    with tempfile.TemporaryDirectory(prefix="batch_predict_") as tmp:
        work = Path(tmp)
        inputs = args.inputs or str(write_digits(work / "images", args.images)[0].parent)
        results = {runner: run(runner, args.bundle, inputs, work, args) for runner in ("local", "ray")}
    local, ray = results["local"], results["ray"]
    if local["count"] != ray["count"]:
        raise SystemExit(f"the runners disagree on the input count: {local['count']} vs {ray['count']}")
    print(f"{local['count']} images, bundle {args.bundle}, {os.cpu_count()} CPUs")
    print(f"{'runner':<8}{'predict images/s':>18}{'end-to-end images/s':>22}{'wall s':>9}")
    for name, r in results.items():
        print(f"{name:<8}{r['images_per_s']:>18}{r['end_to_end_images_per_s']:>22}{r['wall_s']:>9}")
    print(f"ray / local (end to end): {ray['end_to_end_images_per_s'] / local['end_to_end_images_per_s']:.2f}×")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
