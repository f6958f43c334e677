"""Calibration and accuracy-control data for INT8 engines.

Calibration images come from the TRAINING split only, transformed exactly as at evaluation (the
datamodule's `preprocess`, never its augmentation), drawn by a seeded permutation so a run is
reproducible and the chosen positions can be checked (`CalibrationSet.indices`). Accuracy control
(NNCF) measures on the VALIDATION split. The test split is left alone: it is what the parity gate judges
the engine on, so calibrating on it would grade the engine on its own homework.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from project.config import dataclass_from_mapping

T = TypeVar("T")

DEFAULT_CALIBRATION_SIZE = 300
CALIBRATION_SPLIT = "train"
CONTROL_SPLIT = "val"


@dataclass
class CalibrationSet:
    """Normalised float32 CPU images (the engine's input) and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    indices: torch.Tensor  # positions in `split` (sorted), so a test can assert what was used
    split: str
    source: str

    @property
    def size(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        yield from self.images.split(max(1, int(batch_size)))

    def labelled_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.labels is None:
            raise ValueError(f"{self.source} has no labels")
        yield from zip(self.images.split(batch_size), self.labels.split(batch_size), strict=True)

    def describe(self) -> dict[str, Any]:
        return {"split": self.split, "size": self.size, "source": self.source}


@dataclass
class Int8Settings:
    """`deploy.int8`: how quantized engines are calibrated (see conf/deploy/default.yaml)."""

    calibration_size: int = DEFAULT_CALIBRATION_SIZE  # training images, seeded
    seed: int = 0
    method: str = "minmax"  # ONNX Runtime calibration: minmax | entropy | percentile
    max_drop: float | None = None  # accuracy points: NNCF accuracy control on the validation split
    validation_size: int = 1000  # validation images accuracy control measures on (at most)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Int8Settings:
        settings = dataclass_from_mapping(cls, values, "deploy.int8")
        if settings.calibration_size < 1:
            raise ValueError(f"deploy.int8.calibration_size must be positive, got {settings.calibration_size}")
        return settings


@dataclass
class CalibrationStats:
    """What a quantized engine's report shows: images calibrated on and the time it took."""

    samples: int
    seconds: float


@dataclass
class QuantizationData:
    """Everything a backend needs to build a quantized engine."""

    calibration: CalibrationSet
    validation: CalibrationSet | None  # labelled; only for accuracy control
    settings: Int8Settings

    def timed(self, quantize: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, CalibrationStats]:
        """Run one library's quantizer and measure it."""
        start = time.perf_counter()
        result = quantize(*args, **kwargs)
        return result, CalibrationStats(self.calibration.size, round(time.perf_counter() - start, 3))


def sample_indices(population: int, size: int, seed: int) -> torch.Tensor:
    """`size` distinct positions out of `population` (all of them when it is smaller), seeded, sorted."""
    if population < 1:
        raise ValueError("cannot draw calibration images from an empty split")
    if size < 1:
        raise ValueError(f"deploy.int8.calibration_size must be positive, got {size}")
    order = torch.randperm(population, generator=torch.Generator().manual_seed(int(seed)))
    return order[: min(int(size), population)].sort().values


def split_tensors(datamodule: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw (images, labels) of one split of a `TensorImageDataModule`-like datamodule."""
    splits = getattr(datamodule, "splits", None)
    if not splits:
        setup = getattr(datamodule, "setup", None)
        if setup is not None:
            setup("fit")
        splits = getattr(datamodule, "splits", None)
    if not isinstance(splits, dict) or split not in splits:
        raise ValueError(f"{type(datamodule).__name__} exposes no {split!r} split to calibrate INT8 engines with")
    return splits[split]


def from_split(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
    size: int,
    seed: int,
    split: str,
    source: str,
) -> CalibrationSet:
    """A seeded subset of one split, preprocessed as at evaluation (uint8 → normalised float32)."""
    idx = sample_indices(len(images), size, seed)
    chosen = images[idx.to(images.device)]
    if preprocess is not None and not torch.is_floating_point(chosen):
        chosen = preprocess(chosen)
    chosen = chosen.detach().to("cpu", torch.float32).contiguous()
    picked_labels = labels[idx.to(labels.device)].detach().cpu().long() if labels is not None else None
    return CalibrationSet(chosen, picked_labels, idx, split, f"{split} split of {source}: {len(idx)} seeded images")


def calibration_from_datamodule(
    datamodule: Any, size: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0, split: str = CALIBRATION_SPLIT
) -> CalibrationSet:
    """Calibration (split=train) or accuracy-control (split=val) images of a datamodule. Never test."""
    if split == "test":
        raise ValueError("INT8 engines are never calibrated on the test split: it is the one parity judges them on")
    images, labels = split_tensors(datamodule, split)
    preprocess = getattr(datamodule, "preprocess", None)
    return from_split(images, labels, preprocess, size, seed, split, type(datamodule).__name__)


def synthetic_calibration(
    shape: tuple[int, int, int], classes: int, size: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0, split: str = "train"
) -> CalibrationSet:
    """Labelled synthetic images for a random-weight network: the same class prototypes as its parity
    data (`project.deploy.synthetic`) but their own noise draws, disjoint from the held-out parity set."""
    from project.deploy.synthetic import prototype_images

    offset = {"train": 3, "val": 4}[split]
    images, labels = prototype_images(shape, classes, int(size), seed=seed, sample_seed=seed + offset)
    return CalibrationSet(
        images.contiguous(), labels, torch.arange(len(images)), split, f"synthetic {split}: {len(images)} images"
    )


def quantization_from_datamodule(datamodule: Any, settings: Int8Settings) -> QuantizationData | None:
    """Calibration images from the train split (and validation images when accuracy control is on); None
    when the datamodule has no train split to draw from."""
    try:
        calibration = calibration_from_datamodule(datamodule, settings.calibration_size, settings.seed)
        validation = None
        if settings.max_drop is not None:
            validation = calibration_from_datamodule(datamodule, settings.validation_size, settings.seed, CONTROL_SPLIT)
    except (ValueError, AttributeError, KeyError):
        return None
    return QuantizationData(calibration, validation, settings)


def synthetic_quantization(shape: tuple[int, int, int], classes: int, settings: Int8Settings) -> QuantizationData:
    """Calibration (and validation) images for a random-weight network with a fitted head."""
    calibration = synthetic_calibration(shape, classes, settings.calibration_size, settings.seed)
    validation = None
    if settings.max_drop is not None:
        validation = synthetic_calibration(shape, classes, settings.validation_size, settings.seed, "val")
    return QuantizationData(calibration, validation, settings)
