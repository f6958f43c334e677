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
import glob
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from project.config import UserError, config_dir, exits_on_user_error, plain
from project.inference.preprocess import IMAGE_SUFFIXES


def _folder_images(folder: str, recursive: bool) -> list[str]:
    """Image files in `folder` (and its subfolders: a test set in class folders), hidden ones left out."""
    base = Path(folder)
    found = base.rglob("*") if recursive else base.iterdir()
    return sorted(
        str(p)
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(base).parts)
    )


def _csv_inputs(csv_file: str) -> list[str]:
    """The `path` column (else the first column) of a CSV, relative paths taken from the CSV's folder."""
    import csv

    with open(csv_file, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise UserError(f"{csv_file} is empty: give a CSV with a path column")
    header = [c.strip().lower() for c in rows[0]]
    column = header.index("path") if "path" in header else 0
    body = rows[1:] if "path" in header else rows
    base = Path(csv_file).parent
    paths = [row[column].strip() for row in body if len(row) > column and row[column].strip()]
    if not paths:
        raise UserError(f"{csv_file} lists no paths")
    return [str(Path(p).expanduser() if Path(p).expanduser().is_absolute() else base / p) for p in paths]


def resolve_inputs(spec: str | Sequence[str] | None, recursive: bool = True) -> list[str]:
    """Paths, folders (their image files, subfolders included unless `recursive=False`), CSV files (their
    `path` column) and globs → the list of files, in a stable order.

    A path in a list that does not exist is kept (its line will say "file not found"); a pattern or
    folder that yields nothing, or a lone missing path, is a usage error."""
    if spec is None or spec == "" or spec == []:
        raise UserError("inputs is required: pass inputs=IMAGE, inputs=FOLDER, inputs=LIST.csv or inputs='GLOB'")
    specs = [spec] if isinstance(spec, str | os.PathLike) else [str(s) for s in spec]
    files: list[str] = []
    for entry in map(str, specs):
        expanded = os.path.expanduser(entry)
        if glob.has_magic(expanded):
            matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"no files match {entry!r}")
            files += matches
        elif os.path.isdir(expanded):
            images = _folder_images(expanded, recursive)
            if not images:
                raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {entry} or its subfolders")
            files += images
        elif expanded.lower().endswith(".csv") and os.path.isfile(expanded):
            files += _csv_inputs(expanded)
        elif len(specs) == 1 and not os.path.exists(expanded):
            raise UserError(f"input not found: {entry}")
        else:
            files.append(expanded)
    return files


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
    from project.inference.batch_records import input_list

    spec = plain(cfg.get("inputs"))
    files = input_list(spec) or resolve_inputs(spec)
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
    main()
