"""Any image an application holds → the exact tensor the network was trained on.

Every input kind (file path, encoded bytes, PIL image, numpy array, tensor) is brought to a PIL image
first and then through one path (mode conversion, resize, uint8 CHW: `project.data.images`, the very
functions data preparation uses), so the same picture gives the same tensor whichever way it arrives.
Normalisation is `project.data.augment.normalize`, the very function training uses, so training and
inference cannot drift apart.

Anything that is not a usable image raises `InvalidInput`, one error type with a message that says
what was wrong, so callers (CLI, server) can record it per item and carry on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from project.data.augment import normalize
from project.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    RESIZE_POLICIES,
    InvalidInput,
    check_size,
    decode,
    image_to_array,
)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_FORMATS", "IMAGE_SUFFIXES", "InvalidInput", "Preprocessor"]


def _describe(item: Any) -> str:
    if isinstance(item, str | os.PathLike):
        return str(item)
    if isinstance(item, np.ndarray | torch.Tensor):
        return f"{type(item).__name__}{tuple(item.shape)}"
    return type(item).__name__


class Preprocessor:
    """Turns inputs into the normalised float32 N×C×H×W batch a bundle's engine takes."""

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        mean: Sequence[float],
        std: Sequence[float],
        value_range: Sequence[float] = (0, 255),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        resize: str = "stretch",
    ) -> None:
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
        if channels not in (1, 3):
            raise ValueError(f"preprocessing channels must be 1 or 3, got {channels}")
        if list(value_range) != [0, 255]:
            # `normalize` (shared with training) maps uint8 0..255; another range would need another path.
            raise ValueError(f"only value_range [0, 255] is supported, got {list(value_range)}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values each, got {list(mean)} / {list(std)}")
        self.channels, self.height, self.width = int(channels), int(height), int(width)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.max_pixels = int(max_pixels)
        self.resize = resize

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], max_pixels: int = DEFAULT_MAX_PIXELS) -> Preprocessor:
        """From a bundle's preprocessing.json (or a checkpoint's input_spec)."""
        return cls(
            channels=spec["channels"],
            height=spec["height"],
            width=spec["width"],
            mean=spec["mean"],
            std=spec["std"],
            value_range=spec.get("value_range", (0, 255)),
            max_pixels=max_pixels,
            # bundles written before resize policies existed stretched every image to the input size
            resize=spec.get("resize", "stretch"),
        )

    # --- one input → uint8 C×H×W ---------------------------------------------------------------
    def to_uint8(self, item: Any, name: str | None = None) -> torch.Tensor:
        """One input → uint8 C×H×W at the model's size. Raises `InvalidInput` naming the input."""
        name = name or _describe(item)
        try:
            image = self._to_image(item)
            return self._from_image(image)
        except InvalidInput as exc:
            raise InvalidInput(exc.reason, name) from None

    def __call__(self, items: Sequence[Any]) -> torch.Tensor:
        """Inputs → the normalised float32 batch (what the engine is fed)."""
        return self.normalize(torch.stack([self.to_uint8(item) for item in items]))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W → float32, standardised exactly as in training."""
        return normalize(batch, self.mean, self.std)

    # --- internals ------------------------------------------------------------------------------
    def _check_size(self, width: int, height: int) -> None:
        check_size(width, height, self.max_pixels)

    def _to_image(self, item: Any) -> Image.Image:
        if isinstance(item, Image.Image):
            self._check_size(*item.size)
            return item
        if isinstance(item, str | os.PathLike):
            return self._decode(self._read_file(Path(item)))
        if isinstance(item, bytes | bytearray | memoryview):
            return self._decode(bytes(item))
        if hasattr(item, "read"):
            return self._decode(item.read())
        if isinstance(item, torch.Tensor):
            return self._array_to_image(item.detach().cpu().numpy(), prefer_channels_first=True)
        if isinstance(item, np.ndarray):
            # numpy images are usually HWC uint8 (Pillow, OpenCV) or CHW float (torch-style)
            return self._array_to_image(item, prefer_channels_first=item.dtype != np.uint8)
        raise InvalidInput(
            f"unsupported input type {type(item).__name__}: pass a file path, image bytes, a PIL image, "
            "a numpy array or a tensor"
        )

    @staticmethod
    def _read_file(path: Path) -> bytes:
        if not path.exists():
            raise InvalidInput("file not found")
        if not path.is_file():
            raise InvalidInput("not a file")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read file ({exc.strerror or exc})") from None

    def _decode(self, data: bytes) -> Image.Image:
        return decode(data, (self.height, self.width), self.channels, self.max_pixels)

    def _array_to_image(self, array: np.ndarray, prefer_channels_first: bool) -> Image.Image:
        if array.ndim == 2:
            array = array[:, :, None]
        elif array.ndim == 3:
            first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
            if (prefer_channels_first and first) or (first and not last):
                array = np.moveaxis(array, 0, -1)
            elif not last:
                raise InvalidInput(f"cannot find the channel axis in shape {array.shape} (1, 3 or 4 channels)")
        else:
            raise InvalidInput(f"expected an image of shape HW, HWC or CHW, got {array.ndim} dimensions {array.shape}")
        height, width, channels = array.shape
        self._check_size(width, height)

        if array.dtype == np.uint8:
            pixels = array
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise InvalidInput("float image contains NaN or infinity")
            low, high = float(array.min()), float(array.max())
            if low < -1e-3 or high > 1 + 1e-3:
                raise InvalidInput(
                    f"float images must hold values in [0, 1], got [{low:.3g}, {high:.3g}] "
                    "(pass uint8 for 0..255; do not normalise yourself)"
                )
            pixels = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            raise InvalidInput(f"unsupported dtype {array.dtype}: pass uint8 (0..255) or float (0..1)")
        # Pillow picks the mode from the shape: HW → L, HW3 → RGB, HW4 → RGBA
        return Image.fromarray(np.ascontiguousarray(pixels if channels > 1 else pixels[:, :, 0]))

    def _from_image(self, image: Image.Image) -> torch.Tensor:
        pixels = image_to_array(image, (self.height, self.width), self.channels, self.resize)
        return torch.from_numpy(pixels)
