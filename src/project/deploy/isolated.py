"""The post-fit step in a fresh Python process, so its figures are those a fresh `project.benchmark` gets.

Inside the training process the engines share the machine with what training left running: torch's
OpenMP pool (and, on the digits path, a second libgomp and OpenBLAS pools loaded by scikit-learn), the
progress bar's refresh thread (100 wake-ups a second), W&B's threads and service process, and a heap
shaped by training. At batch 1 an engine's worker threads meet at a barrier after every operator, so
any of these that is scheduled in delays the whole call (issue 13 item 8: ~40 % slower than a fresh
process). A child process starts with none of them; the parent only waits.

    python -m project.deploy.isolated JOB.json   (written by `run_isolated`; not a user command)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import project
from project.atomic import atomic_write_text
from project.deploy.parity import ParityData
from project.deploy.quantize.calibration import QuantizationData, quantization_from_tensors, quantization_tensors
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings

log = logging.getLogger(__name__)
JOB_FOLDER = ".deploy_job"


def run_isolated(
    checkpoint: str | Path,
    settings: DeploySettings,
    output_dir: str | Path,
    data: ParityData | None,
    quantization: QuantizationData | None = None,
) -> BenchmarkReport:
    """Run `run_pipeline` on `checkpoint` in a child process (its output goes to this process's console)
    and return the report it wrote. Raises RuntimeError when the child fails or is killed."""
    output_dir = Path(output_dir)
    job = output_dir / JOB_FOLDER
    shutil.rmtree(job, ignore_errors=True)
    job.mkdir(parents=True)
    try:
        parity = None
        if data is not None:
            parity = job / "parity.pt"
            torch.save({"images": torch.cat(data.batches), "labels": data.labels, "source": data.source}, parity)
        calibration = None
        if quantization is not None:  # int8 calibration images (train split), handed over as tensors
            calibration = job / "quantization.pt"
            torch.save(quantization_tensors(quantization), calibration)
        spec = {
            "quantization": str(calibration) if calibration else None,
            "checkpoint": str(checkpoint),
            "settings": settings.to_config(),
            "output_dir": str(output_dir),
            "parity": str(parity) if parity else None,
        }
        atomic_write_text(job / "job.json", json.dumps(spec))
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # the child needs the device memory training cached
        env = dict(os.environ)
        src = str(Path(project.__file__).resolve().parents[1])  # this very `project`, however it was found
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        code = subprocess.call([sys.executable, "-m", "project.deploy.isolated", str(job / "job.json")], env=env)
        if code != 0:
            raise RuntimeError(f"the post-fit process exited with code {code} (its output is above)")
        return BenchmarkReport.read(output_dir / "benchmark.json")
    finally:
        shutil.rmtree(job, ignore_errors=True)


def run_job(spec: dict[str, Any]) -> BenchmarkReport:
    """The child's side: the same pipeline `project.benchmark` runs, on what the parent handed over."""
    from project.deploy.checkpoint import load_net
    from project.deploy.pipeline import run_pipeline

    net, net_config, input_spec = load_net(spec["checkpoint"])
    data = None
    if spec.get("parity"):
        saved = torch.load(spec["parity"], weights_only=True)
        data = ParityData([saved["images"]], saved["labels"], saved["source"])
    settings = DeploySettings.from_config(spec["settings"])
    quantization = None
    if spec.get("quantization"):
        quantization = quantization_from_tensors(torch.load(spec["quantization"], weights_only=True), settings.int8)
    return run_pipeline(
        net,
        net_config,
        input_spec,
        settings,
        spec["output_dir"],
        data=data,
        checkpoint=spec["checkpoint"],
        quantization=quantization,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    spec = json.loads(Path(argv[0]).read_text())
    settings = DeploySettings.from_config(spec["settings"])
    try:
        run_job(spec)
    except Exception as exc:
        if settings.strict:
            raise
        log.error("deploy: the post-fit step failed: %s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
