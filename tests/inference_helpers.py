"""Helpers shared by the inference tests: a small digits model trained in-process, bundles, test images.

Trained with a plain loop (a few seconds) rather than `python -m project.train`, so these tests neither
depend on nor wait for the post-fit deploy step. The fixtures built from them are in inference_fixtures.py."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from project.data.digits import DigitsDataModule
from project.deploy.backends import BACKENDS
from project.deploy.backends.eager import EagerBackend
from project.deploy.bundle import write_bundle
from project.deploy.parity import ParityData
from project.deploy.pipeline import run_pipeline
from project.deploy.settings import DeploySettings
from project.models.nets import DigitsCNN

NET_CONFIG = {"_target_": "project.models.nets.DigitsCNN", "in_channels": 1, "num_classes": 10, "width": 16}


def train_digits(epochs: int = 2, seed: int = 0) -> tuple[nn.Module, DigitsDataModule]:
    """A DigitsCNN trained for a few epochs on the digits train split (~97 % test accuracy, ~3 s)."""
    torch.manual_seed(seed)
    data = DigitsDataModule(val_size=180)
    data.setup()
    images, labels = data.splits["train"]
    inputs = data.preprocess(images)
    net = DigitsCNN(in_channels=1, num_classes=10, width=16)
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(net(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval(), data


def engines_for(net: nn.Module) -> list:
    """Every registered backend that builds here (the optional ones first), eager fp32 last."""
    example = torch.zeros(1, 1, 8, 8)
    engines = []
    for kind, backend_cls in BACKENDS.items():
        if kind == "eager":
            continue
        try:
            backend = backend_cls()
            if backend.unavailable_reason() is None:
                engines.append((backend, backend.build(net, example, 64)))
        except Exception:  # an optional backend that cannot build here is simply left out
            continue
    eager = EagerBackend()
    return [*engines, (eager, eager.build(net, example, 64))]


def build_bundle(directory: Path, net: nn.Module, data: DigitsDataModule, engines: list | None = None) -> Path:
    return write_bundle(directory, net, NET_CONFIG, data.input_spec(), engines=engines or engines_for(net))


def build_pipeline_bundle(
    out: Path, net: nn.Module, data: DigitsDataModule, batch_sizes: tuple = (1, 8), plot: bool = False
) -> Path:
    """`out/deploy` written by the real post-fit pipeline with ONNX Runtime chosen (`deploy.backend`);
    `plot`: draw benchmark.png too (it ships in the bundle's pictures, as does what `out/data_card` holds)."""
    images, labels = data.splits["test"]
    parity = ParityData([data.preprocess(images)], labels, "digits test split")
    settings = DeploySettings.from_config(
        {
            "backends": ["eager", "onnxruntime"],
            "backend": "onnxruntime",
            "batch_sizes": list(batch_sizes),
            "timing": {"warmup_iters": 1, "min_iters": 2, "min_duration_s": 0.01},
            "threads": 1,
            "plot": plot,
            "strict": True,
        }
    )
    run_pipeline(net, NET_CONFIG, data.input_spec(), settings, out, data=parity)
    return out / "deploy"


def digit_samples(data: DigitsDataModule, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` test images (uint8 N×8×8) and labels."""
    images, labels = data.splits["test"]
    return images[:n, 0].numpy(), labels[:n].numpy()


def save_pngs(directory: Path, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = directory / f"{i:03d}_label{label}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def png_bytes(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width × height pixels: a decompression bomb, caught before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
