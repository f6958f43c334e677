"""What a Hugging Face vision backbone expects of its input (size, mean, std), read from its
`preprocessor_config.json`, so the data config takes the backbone's values instead of hand-picked ones.

Configs use it through the `hf_preprocessing` resolver (registered in `project.config`):
`mean: ${hf_preprocessing:${model.net.name},image_mean}`. `name` is a local folder written by
`save_pretrained` or a hub id (downloaded once into the Hugging Face cache; `HF_HUB_OFFLINE=1` is honoured).
No torch or transformers import here: resolving a config stays cheap.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from project.config import UserError

PREPROCESSOR_FILE = "preprocessor_config.json"
KEYS = ("image_mean", "image_std", "image_size")
# what transformers' image processors assume when the file leaves a value out (ImageNet statistics)
DEFAULTS = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "image_size": 224}


@lru_cache(maxsize=16)
def read_preprocessor_config(name: str) -> dict[str, Any]:
    """The backbone's preprocessor config, from a local folder or the hub (cache first)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        file = folder / PREPROCESSOR_FILE
        if not file.is_file():
            raise UserError(
                f"{folder} has no {PREPROCESSOR_FILE}: save the image processor beside the model "
                "(AutoImageProcessor.from_pretrained(...).save_pretrained(folder)), or set data.mean/std/image_size"
            )
    else:
        try:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(str(name), PREPROCESSOR_FILE))
        except Exception as exc:
            raise UserError(
                f"cannot get {PREPROCESSOR_FILE} of backbone {name!r} ({type(exc).__name__}): offline, pass a local "
                "folder written by save_pretrained as model.net.name=PATH"
            ) from None
    try:
        return json.loads(file.read_text())
    except ValueError as exc:
        raise UserError(f"{file} is not valid JSON ({exc})") from None


def input_size(config: dict[str, Any]) -> int | list[int]:
    """The network's input size: the centre crop if the processor crops, else its resize target."""
    for key in ("crop_size", "size"):
        value = config.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            if "height" in value and "width" in value:
                h, w = int(value["height"]), int(value["width"])
                return h if h == w else [h, w]
            if "shortest_edge" in value:
                return int(value["shortest_edge"])
    return DEFAULTS["image_size"]


def preprocessing_value(name: str, key: str) -> Any:
    """One of `image_mean`, `image_std` (lists on the [0, 1] scale) or `image_size` for backbone `name`."""
    if key not in KEYS:
        raise UserError(f"hf_preprocessing key {key!r} is unknown; use one of {list(KEYS)}")
    if not name:
        raise UserError("model.net.name is not set: give a hub id (microsoft/resnet-50) or a local folder")
    config = read_preprocessor_config(str(name))
    if key == "image_size":
        return input_size(config)
    return [float(v) for v in config.get(key) or DEFAULTS[key]]
