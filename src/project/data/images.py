"""One image file → the uint8 C×H×W array a network sees: the single loading path shared by data
preparation (`project.data.prepare`) and the predictor (`project.inference.preprocess`).

Decode (allow-listed formats, decompression-bomb guard, JPEG draft downscaling, EXIF orientation),
convert the mode (greyscale, RGBA/LA/palette with transparency composited on white, CMYK, 16-bit) to
`channels`, then resize with one policy. Preparing and predicting call the same functions, so a photo
gives the same tensor in training and in production.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# Decoders Pillow may use: the common formats, and none of the exotic ones an attacker could aim at.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Decompression-bomb guard: images above this many pixels are refused before they are decoded.
# 50 MP is above any phone camera; Pillow's own hard limit (2 × Image.MAX_IMAGE_PIXELS) still applies.
DEFAULT_MAX_PIXELS = 50_000_000
# shorter_side_center_crop: scale to cover the target, cut the centre (no distortion, edges lost)
# pad: scale to fit inside the target, black borders (nothing lost); stretch: scale each axis on its own
RESIZE_POLICIES = ("shorter_side_center_crop", "pad", "stretch")


class InvalidInput(ValueError):
    """An input that is not a usable image: unreadable, empty, truncated, too large, wrong dtype/shape.

    `reason` says what is wrong, `source` which input (a path, or "input 3"), so a caller can report
    either without parsing the message."""

    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(f"{source}: {reason}" if source else reason)
        self.reason, self.source = reason, source

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason, self.source)


def image_mode(channels: int) -> str:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return "L" if channels == 1 else "RGB"


def check_size(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise InvalidInput(f"image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise InvalidInput(
            f"image is {width}×{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(decompression-bomb guard; raise max_pixels if this is intended)"
        )


def decode(
    data: bytes,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    info: dict[str, Any] | None = None,
) -> Image.Image:
    """Encoded bytes → an upright, fully loaded PIL image. `size` (height, width), when given, lets a big
    JPEG decode at a reduced scale that is still at least that size (Pillow's `draft`). `info`, when
    given, receives the file's format, mode, width and height (for the data card)."""
    if not data:
        raise InvalidInput("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # above Image.MAX_IMAGE_PIXELS Pillow warns; our own limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if info is not None:
            info.update(format=image.format, mode=image.mode, width=image.width, height=image.height)
        check_size(*image.size, max_pixels)  # from the header, before any pixel is decoded
        if image.format == "JPEG" and size is not None:
            # draft keeps both sides ≥ the request; a square request is orientation-proof for EXIF
            side = max(size)
            image.draft(image_mode(channels), (side, side))
        image.load()
        image = ImageOps.exif_transpose(image)  # phone photos: honour the orientation tag
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"image too large ({exc})") from None
    except Image.UnidentifiedImageError:
        raise InvalidInput(f"not a recognised image ({', '.join(IMAGE_FORMATS)} are accepted)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"corrupt or truncated image ({exc})") from None
    return image


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode → L (channels=1) or RGB (channels=3). Transparency is composited on white;
    16/32-bit greyscale is scaled (not clipped) to 8 bits."""
    mode = image_mode(channels)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if values.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8))
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != mode:
        image = image.convert(mode)
    return image


def resize(image: Image.Image, size: tuple[int, int], policy: str = "shorter_side_center_crop") -> Image.Image:
    """Resize to `size` = (height, width) with one of `RESIZE_POLICIES`, in a single Pillow call."""
    height, width = size
    src_w, src_h = image.size
    if (src_w, src_h) == (width, height):
        return image
    bilinear = Image.Resampling.BILINEAR
    if policy == "stretch":
        return image.resize((width, height), bilinear)
    if policy == "shorter_side_center_crop":
        scale = max(width / src_w, height / src_h)
        box_w, box_h = width / scale, height / scale  # the source window that covers the target
        left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
        return image.resize((width, height), bilinear, box=(left, top, left + box_w, top + box_h))
    if policy == "pad":
        scale = min(width / src_w, height / src_h)
        new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        canvas = Image.new(image.mode, (width, height))
        canvas.paste(image.resize((new_w, new_h), bilinear), ((width - new_w) // 2, (height - new_h) // 2))
        return canvas
    raise ValueError(f"unknown resize policy {policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")


def to_chw(image: Image.Image) -> np.ndarray:
    """An L or RGB image → uint8 C×H×W."""
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None].copy() if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def image_to_array(
    image: Image.Image, size: tuple[int, int], channels: int = 3, policy: str = "shorter_side_center_crop"
) -> np.ndarray:
    """A decoded image → uint8 C×H×W at `size` (height, width)."""
    return to_chw(resize(convert_mode(image, channels), size, policy))


def load_array(
    data: bytes,
    size: tuple[int, int],
    channels: int = 3,
    policy: str = "shorter_side_center_crop",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Encoded bytes → uint8 C×H×W: exactly what preparation stores and the predictor feeds."""
    return image_to_array(decode(data, size, channels, max_pixels), size, channels, policy)


def as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`data.image_size`: one int (square) or [height, width]."""
    sizes = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"image_size must be a positive int or [height, width], got {image_size}")
    return sizes  # type: ignore[return-value]
