"""A small stand-in for `cifar-10-binary.tar.gz` in the exact official layout, with learnable classes.

Each class is a colour plus a stripe direction, under noise, so a net trained for a few steps beats chance
clearly while augmentation (crops, flips) keeps every class recognisable.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

from project.data.cifar10 import ARCHIVE, CLASS_NAMES, FOLDER, RECORD_BYTES, TEST_FILE, TRAIN_FILES

# ten well-separated RGB colours, one per class
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [128, 128, 128],
        [250, 250, 250],
    ],
    dtype=np.float32,
)


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 N×3×32×32: the class colour, brightened on horizontal (even class) or vertical stripes."""
    n = len(labels)
    colour = PALETTE[labels][:, :, None, None]  # N,3,1,1
    stripes = (np.arange(32) // 4) % 2 == 0
    mask = np.where((labels % 2 == 0)[:, None, None], stripes[None, :, None], stripes[None, None, :])
    images = colour * (0.6 + 0.4 * mask[:, None, :, :]) + rng.normal(0, 20, (n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8)


def records(labels: np.ndarray, images: np.ndarray) -> bytes:
    """The binary batch format: per image one label byte, then 3072 pixel bytes (R, G, B planes)."""
    out = np.empty((len(labels), RECORD_BYTES), dtype=np.uint8)
    out[:, 0] = labels
    out[:, 1:] = images.reshape(len(labels), -1)
    return out.tobytes()


def write_cifar_archive(dest_dir: Path, per_batch: int = 60, n_test: int = 200, seed: int = 0) -> tuple[Path, str]:
    """Write `dest_dir/cifar-10-binary.tar.gz` (5 training batches of `per_batch` images and a test batch);
    return its path and md5."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    for name, n in [*((f, per_batch) for f in TRAIN_FILES), (TEST_FILE, n_test)]:
        labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.uint8)
        files[name] = records(labels, make_images(labels, rng))
    files["batches.meta.txt"] = ("\n".join(CLASS_NAMES) + "\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive = dest_dir / ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()
