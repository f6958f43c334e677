"""`make benchmark-data [ARGS="--images 300"]`: how fast a folder of photos becomes training data.

1. Preparing a generated folder of real-size JPEG photos (default 300 at 640×480) with
   `project.data.prepare` (parallel decoding, JPEG draft downscaling, memory-mapped output, data card)
   against a plain single-process Pillow loop (open, convert, resize), side by side in one run.
2. The prepared path's feed rate (batches from the memory-mapped split, normalised, as training gets
   them) against what training consumes (forward + backward + step of the default model), both at the
   default image size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def make_photos(folder: Path, count: int, size: tuple[int, int], classes: int = 4) -> list[Path]:
    """Photo-like JPEGs (smooth gradients, shapes and sensor noise, quality 90) in class folders."""
    rng = np.random.default_rng(0)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        base = rng.uniform(40, 215, 3)
        slope = rng.uniform(-0.15, 0.15, (2, 3))
        pixels = base + xs[..., None] * slope[0] + ys[..., None] * slope[1]
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(30, height / 2)
        pixels[(xs - cx) ** 2 + (ys - cy) ** 2 < r * r] += rng.uniform(-60, 60, 3)
        pixels += rng.normal(0, 6, pixels.shape)
        path = folder / f"class_{i % classes}" / f"photo_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def plain_pillow_loop(paths: list[Path], side: int) -> float:
    """The baseline: one process, open → convert → resize → array, per file. Returns seconds."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
    return time.perf_counter() - start


def prepare_seconds(root: Path, out: Path, side: int, workers: int | None) -> tuple[float, float, float]:
    """A cold preparation (everything: scan, decode, write, card), its decoding phase alone (parallel
    read + decode + resize, what the plain loop does), and a warm run (cache hit)."""
    from project.data.prepare import PrepSettings, ensure_prepared

    settings = PrepSettings(image_size=[side, side], val_fraction=0.1, test_fraction=0.1)
    start = time.perf_counter()
    meta = ensure_prepared(root, False, settings, out, workers=workers)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    ensure_prepared(root, False, settings, out, workers=workers)
    return cold, meta["seconds"]["decode"], time.perf_counter() - start


def feed_rate(out: Path, batch_size: int, seconds: float = 2.0) -> float:
    """Images/s the prepared train split delivers as normalised training batches (shuffled, memory-mapped)."""
    import torch

    from project.data.augment import normalize
    from project.data.tensor_data import TensorBatchLoader

    images = torch.from_numpy(np.load(out / "images_train.npy", mmap_mode="c"))
    labels = torch.from_numpy(np.load(out / "labels_train.npy"))
    loader = TensorBatchLoader(images, labels, batch_size=min(batch_size, len(labels)), shuffle=True, drop_last=True)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, _ in loader:
            normalize(x, [0.5] * 3, [0.25] * 3)
            done += len(x)
    return done / (time.perf_counter() - start)


def training_rate(side: int, classes: int, batch_size: int, steps: int = 6) -> float:
    """Images/s the default model (conf/model/digits_cnn, fitted to RGB and the classes) trains at."""
    import torch

    from project.models.nets import DigitsCNN

    net = DigitsCNN(in_channels=3, num_classes=classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, side, side)
    y = torch.randint(0, classes, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--photo-size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--image-size", type=int, default=64, help="the prepared (training) size")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    from project.data.decode_pool import default_workers

    width, height = (int(v) for v in args.photo_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="data-speed-") as tmp:
        root = Path(tmp) / "photos"
        paths = make_photos(root, args.images, (width, height))
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        plain = plain_pillow_loop(paths, args.image_size)
        cold, decoding, warm = prepare_seconds(root, Path(tmp) / "prepared", args.image_size, args.workers)
        feed = feed_rate(Path(tmp) / "prepared", args.batch_size)
    train = training_rate(args.image_size, 4, args.batch_size)
    n = args.images
    print(f"\n{n} JPEG photos {width}×{height} ({megabytes:.1f} MB) → {args.image_size}×{args.image_size} RGB; "
          f"{args.workers or default_workers()} decoding processes")  # fmt: skip
    print(f"{'path':<52} {'seconds':>8} {'images/s':>10} {'vs plain':>9}")
    rows = [
        ("plain Pillow loop (1 process: open, convert, resize)", plain),
        ("project.prepare: parallel decode + resize phase", decoding),
        ("project.prepare, cold (+ scan, write, stats, card)", cold),
        ("project.prepare, warm (nothing changed: cache hit)", warm),
    ]
    for name, seconds in rows:
        print(f"{name:<52} {seconds:>8.2f} {n / seconds:>10,.0f} {plain / seconds:>8.2f}×")
    print(f"\nfeed rate of the prepared set (batches of {args.batch_size}, normalised): {feed:>10,.0f} images/s")
    print(f"training consumes (default model, forward+backward+step):        {train:>10,.0f} images/s")
    print(f"feed / consumption: {feed / train:.1f}×  (the data path is {'not ' if feed < train else ''}the bottleneck"
          f"{'' if feed < train else ' only if this drops below 1×'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
