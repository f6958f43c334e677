"""Encoded images → the normalised batch the engine takes, for Triton's Python backend.

Copied into `<model>_preprocess/1/` by `python -m project.export format=triton`, beside `vendor/` (the
project's own preprocessing modules, copied verbatim) and `preprocessing.json` (the bundle's spec), so
it runs the very code the Predictor runs, with nothing of the project installed. Needs numpy, Pillow and
torch (CPU) in the Python backend's environment. Importable and testable outside Triton too."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_preprocess(folder: Path = HERE) -> Callable[[Sequence[bytes]], np.ndarray]:
    """The bundle's preprocessing as a function: encoded images (bytes) → float32 N×C×H×W.
    Raises ValueError (the project's InvalidInput) naming the first image that is not usable."""
    vendor = str(folder / "vendor")
    if vendor not in sys.path:
        sys.path.insert(0, vendor)
    from project.inference.preprocess import Preprocessor

    spec = json.loads((folder / "preprocessing.json").read_text())
    preprocessor = Preprocessor.from_spec(spec, max_pixels=int(spec.get("max_pixels", 50_000_000)))

    def preprocess(images: Sequence[bytes]) -> np.ndarray:
        import torch

        pixels = [preprocessor.to_uint8(bytes(image), f"image {i}") for i, image in enumerate(images)]
        return preprocessor.normalize(torch.stack(pixels)).numpy()

    return preprocess
