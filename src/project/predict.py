"""`python -m project.predict bundle=PATH inputs=PATH_OR_GLOB [topk=3] [output=preds.jsonl] [runner=ray]`

One JSON line per input, in input order: `{"input", "label", "index", "score", "topk"}`, or
`{"input", "error"}` for an input that could not be read; the rest are still predicted. `runner=ray`
spreads the work over a Ray actor pool and writes JSONL or Parquet shards (project.inference.ray_runner).
A summary (count, failures, images/s) goes to stderr and to `summary.json` beside `output=`. No run
folder is written unless asked (`hydra=default`). Exit code 1 when any input failed
(`fail_on_error=false` to exit 0), 2 for a usage error (no bundle, no inputs).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from project.config import UserError, config_dir, exits_on_user_error, plain
from project.inputs import list_inputs


@contextlib.contextmanager
def _open_output(path: str | None) -> Iterator[IO[str]]:
    if not path:
        yield sys.stdout
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yield f


def _progress(enabled: bool, total: int) -> Any:
    """A rich progress bar on stderr (stdout may be the JSON lines) when it is a terminal, or a no-op."""
    if not enabled or total < 2 or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("predicting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


RUNNERS = ("local", "ray")


def summarize(count: int, failed: int, seconds: float, **details: Any) -> dict[str, Any]:
    """The summary every runner reports (stderr line and summary.json)."""
    return {
        "count": count,
        "failed": failed,
        "seconds": round(seconds, 4),
        "images_per_s": round(count / seconds, 1) if seconds > 0 else None,
        **details,
    }


def predict_locally(cfg: DictConfig, files: list[str]) -> dict[str, Any]:
    """runner=local: this process, `batch_size` inputs at a time, JSON lines in input order."""
    from project.inference.batch_records import predict_records
    from project.inference.predictor import Predictor  # after the cheap checks: torch import is slow

    batch_size = cfg.get("batch_size")
    predictor = Predictor.load(
        cfg.bundle,
        backend=cfg.get("backend"),
        batch_size=None if batch_size is None else int(batch_size),
        max_pixels=int(cfg.max_pixels),
        trust_native_code=cfg.get("trust_native_code") is True,
    )
    failures = 0
    start = time.perf_counter()
    with _open_output(cfg.get("output")) as out, _progress(bool(cfg.get("progress", True)), len(files)) as bar:
        task = bar.add_task("predict", total=len(files)) if bar is not None else None
        for first in range(0, len(files), predictor.batch_size):
            chunk = files[first : first + predictor.batch_size]
            for record in predict_records(predictor, chunk, int(cfg.topk)):
                failures += "error" in record
                out.write(json.dumps(record) + "\n")
            if bar is not None:
                bar.advance(task, len(chunk))
        out.flush()
    return summarize(
        len(files),
        failures,
        time.perf_counter() - start,
        runner="local",
        backend=predictor.backend,
        bundle=str(predictor.bundle.directory) if predictor.bundle else None,
        output=cfg.get("output"),
    )


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every input of `cfg.inputs` with the bundle `cfg.bundle` on `cfg.runner`; return the summary."""
    if not cfg.get("bundle"):
        raise UserError("bundle is required: pass bundle=PATH/TO/<run>/deploy")
    if int(cfg.topk) < 1:
        raise UserError(f"topk must be at least 1, got {cfg.topk}")
    runner = cfg.get("runner", "local")
    if runner not in RUNNERS:
        raise UserError(f"runner={runner} is not known: use one of {', '.join(RUNNERS)}")
    files = list_inputs(plain(cfg.get("inputs")))  # the same lister as training (project.inputs)
    if runner == "ray":
        from project.inference.ray_runner import predict_on_ray

        return predict_on_ray(cfg, files)
    return predict_locally(cfg, files)


def summary_path(cfg: DictConfig) -> Path | None:
    """Where summary.json goes: `summary=` if given, else beside `output=`, else the run folder when one
    was asked for (`hydra=default`); with none of these the summary is on stderr only."""
    if cfg.get("summary"):
        return Path(cfg.summary)
    if cfg.get("output"):
        return Path(cfg.output).parent / "summary.json"
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.output_subdir is not None:
        return Path(hydra_cfg.runtime.output_dir) / "summary.json"
    return None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    summary = predict(cfg)
    path = summary_path(cfg)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"predicted {summary['count']} input(s), {summary['failed']} failed, in {summary['seconds']:.2f} s "
        f"({summary['images_per_s']} images/s, {summary['backend']} engine, {summary['runner']} runner)"
        + (f"; predictions in {summary['output']}" if summary["output"] else "")
        + (f"; summary in {path}" if path else ""),
        file=sys.stderr,
    )
    if summary["failed"] and cfg.get("fail_on_error", True):
        raise SystemExit(1)


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("predict")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
