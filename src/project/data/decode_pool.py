"""Decode and resize many image files in parallel worker processes, with a progress bar.

Each worker reads a file once (its sha256 for the manifest and duplicate search comes from the same
bytes), decodes it with `project.data.images` (JPEG draft downscaling, EXIF orientation) and returns
the small resized array; the parent writes it into the prepared set's memory-mapped array.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from project.config import UserError
from project.data.images import InvalidInput, decode, image_to_array

if TYPE_CHECKING:
    from project.data.prepare import PrepSettings
    from project.data.scan import Entry

log = logging.getLogger(__name__)
# below this many files a pool costs more than it saves
MIN_FILES_FOR_POOL = 48


def decode_file(path: str, size: tuple[int, int], channels: int, policy: str, max_pixels: int) -> dict[str, Any]:
    """One file → {"pixels" or "reason", sha256, bytes, original width/height/mode/format}."""
    record: dict[str, Any] = {"pixels": None, "reason": None, "sha256": None, "bytes": 0}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        record["reason"] = "file not found"
        return record
    except OSError as exc:
        record["reason"] = f"cannot read file ({exc.strerror or exc})"
        return record
    record["bytes"] = len(data)
    record["sha256"] = hashlib.sha256(data).hexdigest()
    info: dict[str, Any] = {}
    try:
        image = decode(data, size, channels, max_pixels, info=info)
        record["pixels"] = image_to_array(image, size, channels, policy)
    except InvalidInput as exc:
        record["reason"] = exc.reason
    except Exception as exc:
        record["reason"] = f"cannot decode ({type(exc).__name__}: {exc})"
    record.update(info)
    return record


def _decode_args(args: tuple[str, tuple[int, int], int, str, int]) -> dict[str, Any]:
    return decode_file(*args)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _progress(total: int) -> Any:
    if total < 2 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("preparing images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork: workers start at once and need nothing re-imported; they only run Pillow and numpy
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "process is multi-threaded, fork() may…"
        return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def decode_all(
    entries: list[Entry], settings: PrepSettings, out: np.ndarray, fail_fast: bool = False, workers: int | None = None
) -> list[dict[str, Any]]:
    """Decode every entry into `out[i]`; return one record per entry (pixels dropped)."""
    size = (settings.image_size[0], settings.image_size[1])
    jobs = [(e.path, size, settings.channels, settings.resize, settings.max_pixels) for e in entries]
    workers = workers or default_workers()
    records: list[dict[str, Any]] = []
    bar = _progress(len(jobs))
    pool = _pool(workers) if workers > 1 and len(jobs) >= MIN_FILES_FOR_POOL else None
    try:
        results = pool.map(_decode_args, jobs, chunksize=8) if pool is not None else map(_decode_args, jobs)
        task = bar.add_task("prepare", total=len(jobs)) if bar is not None else None
        if bar is not None:
            bar.start()
        for i, record in enumerate(results):
            pixels = record.pop("pixels")
            if pixels is not None:
                out[i] = pixels
            elif fail_fast:
                raise UserError(
                    f"bad image {entries[i].path}: {record['reason']} (data.on_bad_file=skip skips such files)"
                )
            records.append(record)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return records
