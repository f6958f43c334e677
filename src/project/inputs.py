"""Listing inputs: the one place that turns folders, globs, CSV files and list files into files, used by
training (`project.data.scan`), `python -m project.predict` and its Ray runner, so all see the same files.

One rule each:
- hidden: a file or folder whose name starts with `.` (.DS_Store, .git/, ._photo.jpg) is never found by a
  folder walk or a glob wildcard. A path you name (an argument, a CSV row, a list line) is used as given.
- suffixes: a folder walk or a glob keeps image files only, `IMAGE_SUFFIXES` in any case (.JPG, .Png); a
  named path is used as given (one that is not an image is reported when it is read).
- CSV: the first row is a header naming the columns (any case, spaces around names ignored); a `path`
  column is required (training also needs `label`, and reads an optional `split`); relative paths are
  relative to the CSV's folder, `~` is expanded.
- a list file (a lone `.txt` or `.lst`): one path or URI a line, blank lines and `#` comments skipped, relative
  paths relative to the list file.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from project.config import UserError
from project.data.images import IMAGE_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst")


def is_uri(entry: str) -> bool:
    return "://" in entry


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def visible_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Every file in `folder` (below it too when `recursive`), hidden files and folders left out, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d)) if recursive else []
        found += [Path(dirpath) / f for f in filenames if not is_hidden(f)]
    return sorted(found)


def folder_images(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(image files, other visible files) in `folder`, by the rules of the module docstring."""
    files = visible_files(folder, recursive)
    return [f for f in files if is_image_name(f)], [f for f in files if not is_image_name(f)]


def glob_images(pattern: str) -> list[str]:
    """The image files a glob matches, sorted (Python's wildcards never match hidden names)."""
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p) and is_image_name(p))


def listed_path(base: Path, text: str) -> Path:
    """A path as written in a CSV or list file: absolute (after `~`) as is, else relative to `base`."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def read_csv(csv_file: Path, required: Sequence[str] = ("path",)) -> list[dict[str, str]]:
    """The rows of a CSV with a header row (see the module docstring), keys lower-case, values stripped."""
    with open(csv_file, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if any(name not in columns for name in required):
            raise UserError(
                f"{csv_file} needs a header row with columns {','.join(required)}; its first row is {columns}"
            )
        return [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def read_list(list_file: Path) -> list[str]:
    """A list file's entries (see the module docstring); entries are taken literally."""
    entries = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line if is_uri(line) else str(listed_path(list_file.parent, line)))
    if not entries:
        raise UserError(f"input list {list_file} names no inputs (one path or URI a line)")
    return entries


def list_inputs(spec: Any, recursive: bool = True) -> list[str]:
    """`inputs=` (a path, URI, folder, glob, CSV or list file, or a list of them) → files, in a stable order.

    A named path that does not exist is kept when it is one of several (its record will say "file not
    found"); a glob or folder that yields no image, or a lone missing path, is a usage error."""
    if spec is None or spec == "" or spec == []:
        raise UserError("inputs is required: pass inputs=IMAGE, inputs=FOLDER, inputs=LIST.csv or inputs='GLOB'")
    specs = [str(spec)] if isinstance(spec, str | os.PathLike) else [str(s) for s in spec]
    files: list[str] = []
    for entry in specs:
        expanded = os.path.expanduser(entry)
        if is_uri(entry):
            files.append(entry)
        elif glob.has_magic(expanded):
            matches = glob_images(expanded)
            if not matches:
                raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) match {entry!r}")
            files += matches
        elif os.path.isdir(expanded):
            images, _ = folder_images(Path(expanded), recursive)
            if not images:
                raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {entry} or its subfolders")
            files += [str(p) for p in images]
        elif expanded.lower().endswith(".csv") and os.path.isfile(expanded):
            rows = read_csv(Path(expanded))
            paths = [str(listed_path(Path(expanded).parent, row["path"])) for row in rows if row.get("path")]
            if not paths:
                raise UserError(f"{entry} lists no paths")
            files += paths
        elif len(specs) == 1 and expanded.lower().endswith(LIST_SUFFIXES) and os.path.isfile(expanded):
            files += read_list(Path(expanded))
        elif len(specs) == 1 and not os.path.exists(expanded):
            raise UserError(f"input not found: {entry}")
        else:
            files.append(expanded)
    return files
