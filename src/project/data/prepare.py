"""A user's image folder (or CSV) → a prepared set: per split one uint8 N×C×H×W memory-mapped `.npy`,
its labels, a manifest and a data card. Decoded once, in parallel, and reused while nothing changed.

prepared/<name>/
  meta.json                      cache key, split rule, class names, per-split counts, mean/std, settings
  images_<split>.npy             uint8 N×C×H×W (opened memory-mapped: sets larger than RAM still train)
  labels_<split>.npy             int64 N
  manifest.csv                   relpath, sha256, bytes, split, label of every kept image
  data_card.{md,json}, samples.png, class_counts.png

The cache key covers the file list, sizes, modification times and every preparation setting: a
second run decodes nothing, and an added, changed or removed file rebuilds the set, as does a set made by
an older split rule (`scan.SPLIT_RULE_VERSION`), with one line saying so. The set is built in
a temporary folder and renamed into place, so a crash never leaves a set that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from project.atomic import atomic_dir
from project.config import UserError
from project.data.decode_pool import decode_all
from project.data.images import DEFAULT_MAX_PIXELS, RESIZE_POLICIES, as_size
from project.data.scan import SPLIT_RULE_VERSION, SPLITS, Scan, assign_splits, scan_csv, scan_folder

log = logging.getLogger(__name__)

PREP_VERSION = 1
META = "meta.json"


@dataclass
class PrepSettings:
    """Everything that changes the prepared pixels or splits (all part of the cache key)."""

    image_size: list[int] = field(default_factory=lambda: [64, 64])
    channels: int = 3
    resize: str = "shorter_side_center_crop"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        self.image_size = list(as_size(self.image_size))
        if self.channels not in (1, 3):
            raise UserError(f"data.channels={self.channels} must be 1 (greyscale) or 3 (RGB)")
        if self.resize not in RESIZE_POLICIES:
            raise UserError(f"data.resize={self.resize!r} must be one of {', '.join(RESIZE_POLICIES)}")


def source_of(root: str | None, csv: str | None) -> Path:
    if bool(root) == bool(csv):
        raise UserError("give exactly one image source: data.root=FOLDER (data=image_folder) or data.csv=FILE")
    return Path(root or csv).expanduser().absolute()  # type: ignore[arg-type]


def default_prepared_dir(source: Path, data_dir: str | Path) -> Path:
    """`<data_dir>/prepared/<source name>-<hash of its absolute path>`: one set per source, never beside
    the user's photos (their folder may be read-only or synced)."""
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    name = re.sub(r"[^\w.-]+", "_", source.stem).strip("_") or "images"
    return Path(data_dir).expanduser().absolute() / "prepared" / f"{name}-{digest}"


def scan_source(source: Path, is_csv: bool) -> Scan:
    return scan_csv(source) if is_csv else scan_folder(source)


def cache_key(scan: Scan, settings: PrepSettings, source: Path) -> str:
    files = [(e.relpath, e.size, e.mtime_ns, e.label, e.split) for e in scan.entries]
    extra = []
    if scan.layout == "csv":
        stat = source.stat()
        extra = [stat.st_size, stat.st_mtime_ns]
    versions = [PREP_VERSION, SPLIT_RULE_VERSION]
    payload = json.dumps([versions, str(source), extra, asdict(settings), scan.empty_classes, files])
    return hashlib.sha256(payload.encode()).hexdigest()


def split_rule_of(meta: dict[str, Any]) -> int:
    """The split rule a prepared set was made by (sets from before it was recorded: rule 1)."""
    return int((meta.get("split_rule") or {}).get("version", 1))


def rebuild_reason(meta: dict[str, Any] | None, key: str) -> str | None:
    """Why the prepared set must be (re)built, or None when it is current."""
    if meta is None:
        return "missing"
    if split_rule_of(meta) != SPLIT_RULE_VERSION:
        return (
            f"made by split rule {split_rule_of(meta)}, under which adding a file could move others between "
            f"splits; rebuilding with rule {SPLIT_RULE_VERSION} (a seeded hash of each path), so the splits change once"
        )
    return None if meta.get("key") == key else "stale (files or settings changed)"


def read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder per prepared set (DDP ranks, two terminals): the others wait, then reuse its result."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_prepared(
    source: Path,
    is_csv: bool,
    settings: PrepSettings,
    directory: Path,
    on_bad_file: str = "skip",
    workers: int | None = None,
    keep_splits: bool = False,
) -> dict[str, Any]:
    """The prepared set's meta.json, building the set first when it is missing or stale. `keep_splits`
    (testing a trained model: `eval`, `benchmark`): a set made by an older split rule is refused, not
    re-split, since re-splitting would put some of the model's training images in its test split."""
    if on_bad_file not in ("skip", "fail"):
        raise UserError(f"data.on_bad_file={on_bad_file!r} must be skip or fail")
    scan = scan_source(source, is_csv)
    key = cache_key(scan, settings, source)
    meta = read_meta(directory)
    if rebuild_reason(meta, key) is None:
        return meta  # type: ignore[return-value]
    with _locked(directory):
        meta = read_meta(directory)  # another process may have built it while we waited
        reason = rebuild_reason(meta, key)
        if reason is None:
            return meta  # type: ignore[return-value]
        if meta is None and directory.is_dir() and any(directory.iterdir()):
            # building would replace it: never delete a folder this project did not write
            raise UserError(
                f"data.prepared_dir={directory} holds files but no prepared set ({META}): give a new or empty folder"
            )
        old_rule = meta is not None and split_rule_of(meta) != SPLIT_RULE_VERSION
        if keep_splits and old_rule:
            raise UserError(
                f"the prepared set {directory} was split by rule {split_rule_of(meta)}, and the model was trained "
                f"on those splits; re-splitting it (rule {SPLIT_RULE_VERSION}) would test on training images: "
                "retrain with python -m project.train, or pass data=... to test on other data"
            )
        level = logging.WARNING if old_rule else logging.INFO  # an old rule: the splits change, say so loudly
        log.log(level, "preparing %s → %s (prepared set %s)", source, directory, reason)
        return _build(scan, key, source, settings, directory, on_bad_file, workers)


def _save_split(tmp: Path, split: str, candidates: np.ndarray, rows: list[int], labels: list[int]) -> None:
    shape = (len(rows), *candidates.shape[1:])
    if rows:
        out = np.lib.format.open_memmap(tmp / f"images_{split}.npy", mode="w+", dtype=np.uint8, shape=shape)
        for start in range(0, len(rows), 1024):  # in chunks: never the whole split in memory
            chunk = rows[start : start + 1024]
            out[start : start + len(chunk)] = candidates[chunk]
        out.flush()
        del out
    else:
        np.save(tmp / f"images_{split}.npy", np.zeros(shape, dtype=np.uint8))
    np.save(tmp / f"labels_{split}.npy", np.asarray(labels, dtype=np.int64))


def _open_images(directory: Path, split: str) -> np.ndarray:
    """A split's images memory-mapped (an empty split cannot be mapped: loaded instead)."""
    empty = not len(np.load(directory / f"labels_{split}.npy"))
    return np.load(directory / f"images_{split}.npy", mmap_mode=None if empty else "r")


def channel_stats(images: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale, in chunks (float64 sums)."""
    channels = images.shape[1]
    if len(images) == 0:
        return [0.5] * channels, [0.5] * channels
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
    count = len(images) * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    return [round(float(m), 6) for m in mean], [round(max(float(s), 1e-3), 6) for s in std]


def _build(
    scan: Scan, key: str, source: Path, settings: PrepSettings, directory: Path, on_bad_file: str, workers: int | None
) -> dict[str, Any]:
    from project.data.card import select_kept, write_card

    # built in a hidden sibling and swapped in by renames (`atomic_dir`): a crash never leaves a set
    # that looks complete, and the previous set survives a failed rebuild
    with atomic_dir(directory) as tmp:
        shape = (len(scan.entries), settings.channels, *settings.image_size)
        candidates = np.lib.format.open_memmap(tmp / "candidates.npy", mode="w+", dtype=np.uint8, shape=shape)
        started = time.perf_counter()
        records = decode_all(scan.entries, settings, candidates, fail_fast=on_bad_file == "fail", workers=workers)
        decode_seconds = time.perf_counter() - started
        # split only the readable images, so a bad file never takes a val/test place
        readable = [e for e, r in zip(scan.entries, records, strict=True) if not r["reason"]]
        small = assign_splits(readable, settings.val_fraction, settings.test_fraction, settings.split_seed)
        kept, summary = select_kept(scan, records)
        if on_bad_file == "fail" and summary["skipped"]:
            first = summary["skipped"][0]
            raise UserError(f"bad image {first['path']}: {first['reason']} (data.on_bad_file=skip skips such files)")
        class_names = sorted({scan.entries[i].label for i in kept})
        if not class_names:
            raise UserError(
                f"no readable image in {source}: {summary['skipped'][0]['reason'] if summary['skipped'] else ''}"
            )
        index = {name: i for i, name in enumerate(class_names)}
        counts: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            rows = [i for i in kept if scan.entries[i].split == split]
            _save_split(tmp, split, candidates, rows, [index[scan.entries[i].label] for i in rows])
            counts[split] = {name: sum(scan.entries[i].label == name for i in rows) for name in class_names}
        del candidates
        (tmp / "candidates.npy").unlink()
        mean, std = channel_stats(_open_images(tmp, "train"))
        _write_manifest(tmp, scan, records, kept)
        meta = {
            "version": PREP_VERSION,
            "key": key,
            "source": str(source),
            "layout": scan.layout,
            "split_rule": {"version": SPLIT_RULE_VERSION, "small_classes": small},
            "settings": asdict(settings),
            "class_names": class_names,
            "counts": counts,
            "mean": mean,
            "std": std,
            "seconds": {"decode": round(decode_seconds, 3)},
        }
        write_card(tmp, meta, summary, records, scan)
        meta["seconds"]["total"] = round(time.perf_counter() - started, 3)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")  # last: its presence means complete
    _log_summary(meta, summary, directory)
    return meta


def _write_manifest(tmp: Path, scan: Scan, records: list[dict[str, Any]], kept: list[int]) -> None:
    import csv

    with open(tmp / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["relpath", "sha256", "bytes", "split", "label"])
        for i in kept:
            entry = scan.entries[i]
            writer.writerow([entry.relpath, records[i]["sha256"], records[i]["bytes"], entry.split, entry.label])


def _log_summary(meta: dict[str, Any], summary: dict[str, Any], directory: Path) -> None:
    sizes = ", ".join(f"{split} {sum(meta['counts'][split].values())}" for split in SPLITS)
    dup = summary["duplicates"]
    print(
        f"prepared {len(meta['class_names'])} classes ({sizes}); skipped {len(summary['skipped'])} bad file(s), "
        f"{dup['cross_split_removed']} cross-split duplicate(s) removed from val/test; "
        f"card: {directory / 'data_card.md'}",
        flush=True,
    )
