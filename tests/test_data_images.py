"""The one image-loading path shared by preparation and the predictor: formats, modes, EXIF, resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from project.data.images import InvalidInput, decode, load_array
from project.inference.preprocess import Preprocessor
from tests.image_files import COLOURS, exif_rotated_jpeg, noisy, truncated_jpeg, write

FORMATS = ["PNG", "JPEG", "BMP", "TIFF", "GIF"] + (["WEBP"] if features.check("webp") else [])


def _mean_colour(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1).mean(axis=1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "CMYK"])
def test_every_format_and_mode_loads_as_rgb_and_grey(tmp_path: Path, fmt: str, mode: str) -> None:
    image = noisy(COLOURS["green"], (30, 20)).convert(mode)
    try:
        path = write(tmp_path / f"x.{fmt.lower()}", image, format=fmt)
    except (OSError, KeyError, ValueError):
        pytest.skip(f"Pillow cannot write {mode} as {fmt}")
    rgb = load_array(path.read_bytes(), (8, 8), channels=3)
    grey = load_array(path.read_bytes(), (8, 8), channels=1)
    assert rgb.shape == (3, 8, 8) and grey.shape == (1, 8, 8) and rgb.dtype == np.uint8
    if mode != "L":  # green stays green (palette, CMYK and alpha conversions included)
        red, green, blue = _mean_colour(rgb)
        assert green > red + 80 and green > blue + 80, (fmt, mode, _mean_colour(rgb))


def test_gif_first_frame_and_16_bit_and_transparency(tmp_path: Path) -> None:
    frames = [noisy(COLOURS["red"]), noisy(COLOURS["blue"])]
    gif = write(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    red, _, blue = _mean_colour(load_array(gif.read_bytes(), (8, 8)))
    assert red > blue + 100  # the first frame
    sixteen = write(tmp_path / "deep.png", Image.fromarray(np.full((10, 10), 65535, np.uint16)))
    assert Image.open(sixteen).mode.startswith("I")
    assert load_array(sixteen.read_bytes(), (4, 4), channels=1).min() == 255  # scaled, not clipped to 0
    clear = write(tmp_path / "clear.png", Image.new("RGBA", (10, 10), (0, 0, 0, 0)))
    assert load_array(clear.read_bytes(), (4, 4)).min() == 255  # transparent → white background


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    data = exif_rotated_jpeg(tmp_path / "phone.jpg").read_bytes()
    assert decode(data).size == (20, 40)  # upright: portrait
    array = load_array(data, (40, 20), policy="stretch")
    top, bottom = _mean_colour(array[:, :20]), _mean_colour(array[:, 20:])
    assert top[0] > top[2] + 100 and bottom[2] > bottom[0] + 100  # red on top, blue below


def test_resize_policies(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :8] = 255  # a white left strip
    data = write(tmp_path / "wide.png", Image.fromarray(pixels)).read_bytes()
    stretch = load_array(data, (10, 10), policy="stretch")
    crop = load_array(data, (10, 10), policy="shorter_side_center_crop")
    pad = load_array(data, (10, 10), policy="pad")
    assert stretch[:, :, 0].min() > 200  # the white strip survives stretching
    assert crop.max() == 0  # the centre 20×20 window holds no white
    assert pad[:, :2].max() == 0 and pad[:, 8:].max() == 0 and pad[:, 3:6, 0].min() > 200  # black bars


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b"hello, not an image", "not a recognised image")],
)
def test_bad_bytes_are_invalid_input(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        load_array(data, (8, 8))


def test_truncated_and_oversized_are_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="truncated"):
        load_array(truncated_jpeg(tmp_path / "cut.jpg").read_bytes(), (8, 8))
    big = write(tmp_path / "big.png", noisy(COLOURS["red"], (50, 50))).read_bytes()
    with pytest.raises(InvalidInput, match="decompression-bomb"):
        load_array(big, (8, 8), max_pixels=1000)


def test_predictor_preprocessing_uses_the_same_path(tmp_path: Path) -> None:
    path = exif_rotated_jpeg(tmp_path / "phone.jpg")
    spec = {"channels": 3, "height": 12, "width": 12, "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "pad"}
    tensor = Preprocessor.from_spec(spec).to_uint8(str(path))
    assert np.array_equal(tensor.numpy(), load_array(path.read_bytes(), (12, 12), policy="pad"))
    old = {k: v for k, v in spec.items() if k != "resize"}  # bundles from before resize policies: stretch
    assert Preprocessor.from_spec(old).resize == "stretch"
