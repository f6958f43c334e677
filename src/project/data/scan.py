"""Find a user's images and their labels, and give each a split: no pixel is decoded here.

Two sources, listed by `project.inputs` (its rules for hidden files, image suffixes and CSV headers):
- a folder: `root/train/<class>/…` (+ optional `root/val/…`, `root/test/…`), or `root/<class>/…` alone;
  images in nested folders below a class folder belong to that class; other files are reported;
- a CSV file with columns `path,label[,split]`, paths relative to the CSV's folder.

Images without a split (a class-only folder, a CSV without `split`) and the train images of a layout
that lacks val or test are split by `assign_splits` (split rule 2): each file by a seeded hash of its
relative path alone, against the fraction thresholds, so adding, removing or renaming other files never
moves it. Only where the hash leaves a class without a test, val or train image does a minimum rule move
one or two of its files (see `top_up`); the data card names those classes. Rule 1 cut each class by rank
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


def top_up(pool: list[Entry], points: dict[int, float], carve_val: float, carve_test: float) -> bool:
    """The minimum rule, after the hash: a class the hash left without a test image (or a val image) gives
    one, from its train files with the smallest hash points, where it can spare it (3+ images for test,
    2 left in train for val); a class the hash left without a train image takes back the non-train file
    with the largest point. Only these few files depend on the rest of the class; True if any moved."""

    def rank(entry: Entry) -> tuple[float, str]:
        return points[id(entry)], entry.relpath

    def smallest(split: str) -> Entry:
        return min((e for e in pool if e.split == split), key=rank)

    def count(split: str) -> int:
        return sum(e.split == split for e in pool)

    moved = False
    if count("train") == 0 and len(pool) > 0:
        last = max(pool, key=rank)
        last.split, moved = "train", True
    if carve_test > 0 and count("test") == 0 and len(pool) >= 3 and count("train") >= 2:
        smallest("train").split, moved = "test", True
    if carve_val > 0 and count("val") == 0 and count("train") >= 2:
        smallest("train").split, moved = "val", True
    return moved


def assign_splits(entries: list[Entry], val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Give every entry a split, in place (see the module docstring): the seeded hash of its path against
    the fractions, then the minimum rule (`top_up`) for a class the hash left without a test, val or train
    image. Returns the classes the minimum rule changed (the data card names them)."""
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
        for entry in pools[label]:
            entry.split = hashed_split(points[id(entry)], carve_val, carve_test)
        if top_up(pools[label], points, carve_val, carve_test):
            small.append(label)
    return small
