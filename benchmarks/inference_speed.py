"""`make benchmark [ARGS="..."]`: every inference engine against eager fp32, every batch size (`deploy=full`).

    python benchmarks/inference_speed.py                         # newest run's best checkpoint (trains one if none)
    python benchmarks/inference_speed.py --ckpt PATH.ckpt
    python benchmarks/inference_speed.py --model cifar_fast --random-weights
    python benchmarks/inference_speed.py --quick deploy.backends=[eager,openvino_bf16]   # Hydra overrides pass through

Runs `python -m project.benchmark` (the post-fit pipeline outside training) in a subprocess and prints the
report it writes (benchmark.md; benchmark.json and benchmark.png lie beside it in the run folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# input size of each conf/model option, for --random-weights (no data set to read it from)
INPUT_SHAPES = {"cifar_fast": (3, 32, 32), "resnet18": (3, 32, 32), "digits_cnn": (1, 8, 8)}


def newest_best_checkpoint(log_dir: Path) -> Path | None:
    """The best checkpoint of the newest training run under `log_dir/train/runs` (run folders are named by
    start time): the one its metrics.json names, else its newest non-`last` checkpoint."""
    runs = sorted((log_dir / "train" / "runs").glob("*"), key=lambda p: p.name, reverse=True)
    for run in runs:
        summary = run / "metrics.json"
        if summary.is_file():
            best = json.loads(summary.read_text()).get("best_checkpoint")
            if best and Path(best).is_file():
                return Path(best)
        checkpoints = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
        if checkpoints:
            return max(checkpoints, key=lambda p: p.stat().st_mtime)
    return None


def run_streaming(cmd: list[str]) -> tuple[int, list[str]]:
    """Run `cmd`, echoing its output as it comes; return the exit code and the output lines."""
    env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "160")}
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    return proc.returncode, lines


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Benchmark inference engines against eager fp32.")
    parser.add_argument("--ckpt", type=Path, help="checkpoint to benchmark (default: newest run's best)")
    parser.add_argument("--model", help=f"a conf/model option, with --random-weights ({', '.join(INPUT_SHAPES)})")
    parser.add_argument("--random-weights", action="store_true", help="no checkpoint: random weights (speed only)")
    parser.add_argument("--input-shape", help="C,H,W for --random-weights when the model is not listed above")
    parser.add_argument("--log-dir", type=Path, default=Path(os.environ.get("PROJECT_ROOT", ".")) / "logs")
    parser.add_argument("--quick", action="store_true", help="the post-fit defaults (deploy=default), not deploy=full")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    python = sys.executable
    cmd = [python, "-m", "project.benchmark", f"paths.log_dir={args.log_dir}", "extras.print_config=false"]
    cmd.append("deploy=default" if args.quick else "deploy=full")
    if args.random_weights or args.model:
        if not (args.random_weights and args.model):
            sys.exit("error: --model and --random-weights go together (a checkpoint names its own model)")
        shape = args.input_shape.split(",") if args.input_shape else INPUT_SHAPES.get(args.model)
        if shape is None:
            sys.exit(f"error: no known input size for model {args.model!r}: pass --input-shape C,H,W")
        cmd += [f"model={args.model}", "random_weights=true", f"input_shape=[{','.join(str(s) for s in shape)}]"]
    else:
        ckpt = args.ckpt or newest_best_checkpoint(args.log_dir)
        if ckpt is None:
            print(f"no checkpoint under {args.log_dir}/train/runs: training the embedded default first", flush=True)
            code, _ = run_streaming([python, "-m", "project.train", f"paths.log_dir={args.log_dir}"])
            if code != 0:
                return code
            ckpt = newest_best_checkpoint(args.log_dir)
            if ckpt is None:
                sys.exit("error: training finished but left no checkpoint")
        cmd.append(f"ckpt_path={ckpt}")
    code, lines = run_streaming(cmd + overrides)
    if code != 0:
        return code
    folders = [line.removeprefix("run folder: ").strip() for line in lines if line.startswith("run folder: ")]
    if folders:
        report = Path(folders[-1]) / "benchmark.md"
        print("\n" + report.read_text())
        print(f"files: {report} (+ benchmark.json, benchmark.png, deploy/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
