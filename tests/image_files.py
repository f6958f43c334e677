"""Small real image files for the data tests: every format and mode, EXIF-rotated photos, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def noisy(colour: tuple[int, int, int], size: tuple[int, int] = (24, 18), seed: int = 0) -> Image.Image:
    """A `size` (width, height) RGB image of `colour` with a little noise (so files differ)."""
    rng = np.random.default_rng(seed)
    pixels = np.array(colour)[None, None, :] + rng.integers(-20, 21, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write(path: Path, image: Image.Image, **save_kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_kwargs)
    return path


def class_folder(
    root: Path, per_class: int = 6, classes: dict | None = None, size=(24, 18), ext=".png", seed: int = 0
) -> Path:
    """root/<class>/<i>.png for each colour class; odd images in a nested folder. Another `seed` makes
    other pixels (the same seed twice makes byte-identical files)."""
    for c, (name, colour) in enumerate((classes or COLOURS).items()):
        for i in range(per_class):
            sub = "nested/deeper" if i % 2 else ""
            write(root / name / sub / f"img {i}{ext}", noisy(colour, size, seed=seed + 100 * c + i))
    return root


def exif_rotated_jpeg(path: Path) -> Path:
    """A 40×20 photo stored sideways: left half red, right half blue, EXIF orientation 6 (90° clockwise),
    so upright it is 20×40 with red on top."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = COLOURS["red"]
    pixels[:, 20:] = COLOURS["blue"]
    exif = Image.Exif()
    exif[0x0112] = 6
    return write(path, Image.fromarray(pixels), exif=exif.tobytes(), quality=95)


def truncated_jpeg(path: Path) -> Path:
    write(path, noisy(COLOURS["red"], (64, 64)), quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
