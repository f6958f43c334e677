"""Find a user's images and their labels, and give each a split: no pixel is decoded here.

Two sources, listed by `project.inputs` (its rules for hidden files, image suffixes and CSV headers):
- a folder: `root/train/<class>/…` (+ optional `root/val/…`, `root/test/…`), or `root/<class>/…` alone;
  images in nested folders below a class folder belong to that class; other files are reported;
- a CSV file with columns `path,label[,split]`, paths relative to the CSV's folder.

Images without a split (a class-only folder, a CSV without `split`) and the train images of a layout
that lacks val or test are split by `assign_splits` (split rule 2): each file by a seeded hash of its
relative path alone, against the fraction thresholds, so adding, removing or renaming other files never
moves it. Only a class too small for the hash to be expected to give val and test an image each uses a
minimum rule (see `is_small_class`); the data card names those classes. Rule 1 cut each class by rank
and a count, so one added image could move others test → val → train (a prepared set made by it is rebuilt).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from project.config import UserError
from project.data.images import IMAGE_SUFFIXES
from project.inputs import folder_images, is_hidden, listed_path, read_csv

SPLITS = ("train", "val", "test")
SPLIT_RULE_VERSION = 2  # 1: each class cut by rank and a count (one added file could move others)
NOT_AN_IMAGE_NAME = f"not a recognised image file name (images end in {', '.join(IMAGE_SUFFIXES)}, any case)"
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Entry:
    """One candidate image: where it is, its label, its split (None until assigned), size and mtime."""

    relpath: str
    path: str
    label: str
    split: str | None
    size: int
    mtime_ns: int


@dataclass
class Scan:
    """What a source holds: the candidate images and the things that were not images of a class."""

    entries: list[Entry]
    layout: str  # "split_folders" | "class_folders" | "csv"
    empty_classes: list[str]  # class folders with no image file
    ignored: list[tuple[str, str]]  # (relative path, reason): outside any class folder, or not an image name


def _entry(path: Path, base: Path, label: str, split: str | None) -> Entry:
    stat = path.stat()
    return Entry(path.relative_to(base).as_posix(), str(path), label, split, stat.st_size, stat.st_mtime_ns)


def _class_folders(folder: Path, base: Path, split: str | None, scan: Scan) -> None:
    for child in sorted(folder.iterdir()):
        if is_hidden(child.name):
            continue
        if child.is_file():
            scan.ignored.append((child.relative_to(base).as_posix(), "not inside a class folder"))
            continue
        images, others = folder_images(child)
        if not images:
            scan.empty_classes.append(f"{split}/{child.name}" if split else child.name)
        scan.entries += [_entry(f, base, child.name, split) for f in images]
        scan.ignored += [(f.relative_to(base).as_posix(), NOT_AN_IMAGE_NAME) for f in others]


def scan_folder(root: str | Path) -> Scan:
    """Scan an image folder in either layout (see the module docstring)."""
    base = Path(root).expanduser().absolute()
    if not base.is_dir():
        raise UserError(f"data.root={root} is not a folder: give a folder of class folders (root/<class>/images)")
    split_dirs = {
        SPLIT_ALIASES[c.name.lower()]: c for c in base.iterdir() if c.is_dir() and c.name.lower() in SPLIT_ALIASES
    }
    if "train" in split_dirs:
        scan = Scan([], "split_folders", [], [])
        for child in sorted(base.iterdir()):
            if is_hidden(child.name) or child in split_dirs.values():
                continue
            scan.ignored.append((child.name, "not train/, val/ or test/ beside train/"))
        for split in SPLITS:
            if split in split_dirs:
                _class_folders(split_dirs[split], base, split, scan)
    else:
        scan = Scan([], "class_folders", [], [])
        _class_folders(base, base, None, scan)
    if not scan.entries:
        raise UserError(
            f"no files in class folders under {base}: expected {base}/<class>/<image> or {base}/train/<class>/<image>"
        )
    return scan


def scan_csv(csv_file: str | Path) -> Scan:
    """Read `path,label[,split]` rows; a listed file that does not exist is kept and reported as bad."""
    file = Path(csv_file).expanduser().absolute()
    if not file.is_file():
        raise UserError(f"data.csv={csv_file} not found: give a CSV file with columns path,label[,split]")
    base = file.parent
    rows = read_csv(file, required=("path", "label"))
    scan = Scan([], "csv", [], [])
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise UserError(f"{file}:{line}: empty path or label")
        split = row.get("split") or None
        if split is not None:
            if split.lower() not in SPLIT_ALIASES:
                raise UserError(f"{file}:{line}: split {split!r} is not one of train, val, test")
            split = SPLIT_ALIASES[split.lower()]
        path = listed_path(base, row["path"])
        relpath = os.path.relpath(path, base).replace(os.sep, "/")
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, 0  # reported as "file not found" when decoding
        scan.entries.append(Entry(relpath, str(path), row["label"], split, size, mtime))
    if not scan.entries:
        raise UserError(f"{file} lists no images")
    return scan


def split_point(seed: int, relpath: str) -> float:
    """Where a file falls in [0, 1): a seeded hash of its relative path, so no other file can move it."""
    return int(hashlib.sha256(f"{seed}:{relpath}".encode()).hexdigest()[:16], 16) / 2**64


def hashed_split(point: float, val_fraction: float, test_fraction: float) -> str:
    """test below `test_fraction`, val below `test_fraction + val_fraction`, train above."""
    return "test" if point < test_fraction else "val" if point < test_fraction + val_fraction else "train"


def is_small_class(n: int, val_fraction: float, test_fraction: float) -> bool:
    """A class of `n` images to split is small when, for a fraction that is carved (> 0), n × fraction < 1:
    the hash is not expected to give that split even one image."""
    return any(fraction > 0 and n * fraction < 1 for fraction in (val_fraction, test_fraction))


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) images out of a class's `n`: the fractions rounded, at least one each where the class
    can spare it, and always at least one image left for training."""
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if test_fraction > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    while n_test + n_val >= n and n_test + n_val > 0:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def assign_splits(entries: list[Entry], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Give every entry a split, in place (see the module docstring); return the small classes, which took
    the minimum rule: the fractions rounded, at least one image each for val and test where the class can
    spare it and one left for train, the files with the smallest hash points going to test, then val."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise UserError(f"data.{name}={value} must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise UserError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves no training images"
        )
    explicit = {e.split for e in entries if e.split is not None}
    carve_val = 0.0 if "val" in explicit else val_fraction
    carve_test = 0.0 if "test" in explicit else test_fraction
    pools: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        if entry.split is None or (entry.split == "train" and (carve_val or carve_test)):
            pools[entry.label].append(entry)
    small = []
    for label in sorted(pools):
        points = {id(e): split_point(seed, e.relpath) for e in pools[label]}
        if not is_small_class(len(pools[label]), carve_val, carve_test):
            for entry in pools[label]:
                entry.split = hashed_split(points[id(entry)], carve_val, carve_test)
            continue
        small.append(label)
        pool = sorted(pools[label], key=lambda e: (points[id(e)], e.relpath))
        n_val, n_test = _counts(len(pool), carve_val, carve_test)
        for i, entry in enumerate(pool):
            entry.split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return small
