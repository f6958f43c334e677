"""Batch augmentation for larger images (random-resized crop, colour jitter), on-device resizing, and the
data-module hooks the models use (`data.image_size`, class counts)."""

from __future__ import annotations

import pytest
import torch

from project.data.augment import BatchAugment, color_jitter, random_resized_crop, resize
from project.data.digits import DigitsDataModule


def gradient(n: int = 16, size: int = 32) -> torch.Tensor:
    """Pixel value = 8 × column: a crop's value span tells how wide it was."""
    row = (torch.arange(size) * (256 // size)).to(torch.uint8)
    return row.view(1, 1, 1, size).expand(n, 3, size, size).contiguous()


def test_resized_crop_of_the_whole_image_is_the_identity() -> None:
    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and torch.equal(out, images)


def test_resized_crop_zooms_into_random_windows() -> None:
    images = gradient()
    out = random_resized_crop(images, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    span = (out.amax((1, 2, 3)) - out.amin((1, 2, 3))).float()
    assert torch.all((span > 100) & (span < 140))  # half the width, stretched back to the full size
    assert out.amin((1, 2, 3)).unique().numel() > 4  # windows at different places
    with pytest.raises(ValueError, match="resized_crop_scale"):
        BatchAugment(resized_crop_scale=[0.5, 1.5])


def test_colour_jitter_scales_brightness_per_image_and_leaves_grey_saturation() -> None:
    images = torch.randint(60, 140, (32, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = color_jitter(images, brightness=0.4, generator=torch.Generator().manual_seed(1))
    ratio = out.float().sum((1, 2, 3)) / images.float().sum((1, 2, 3))
    assert torch.all((ratio > 0.59) & (ratio < 1.41)) and ratio.std() > 0.05
    grey = images[:, :1].expand(-1, 3, -1, -1).contiguous()
    assert torch.equal(color_jitter(grey, saturation=0.5, generator=torch.Generator().manual_seed(2)), grey)
    contrast = color_jitter(images, contrast=0.5, generator=torch.Generator().manual_seed(3))
    assert (contrast.float().mean() - images.float().mean()).abs() < 2  # contrast pivots on the mean
    assert torch.equal(color_jitter(images), images)


def test_full_pipeline_is_reproducible_under_a_seed_and_keeps_cifar_keys() -> None:
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    keys = {"resized_crop_scale": [0.35, 1.0], "flip": True, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}
    first, again = BatchAugment(**keys, seed=3)(images), BatchAugment(**keys, seed=3)(images)
    assert first.shape == images.shape and first.dtype == torch.uint8 and torch.equal(first, again)
    assert not torch.equal(first, BatchAugment(**keys, seed=4)(images))
    cifar = BatchAugment(crop_padding=4, flip=True, seed=3)(images)  # the CIFAR recipe is unchanged
    assert cifar.shape == images.shape and not torch.equal(cifar, images)


def test_resize_changes_size_only_when_asked() -> None:
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert resize(images, 8) is images
    big = resize(images, [16, 24])
    assert big.shape == (2, 1, 16, 24) and big.dtype == torch.uint8
    assert big.float().mean().sub(images.float().mean()).abs() < 4


def test_data_image_size_resizes_every_split_and_counts_classes() -> None:
    data = DigitsDataModule(val_size=180, image_size=16)
    data.setup()
    assert {tuple(x.shape[-2:]) for x, _ in data.splits.values()} == {(16, 16)}
    spec = data.input_spec()
    assert (spec["height"], spec["width"], spec["channels"]) == (16, 16, 1)
    counts = data.class_counts()
    assert len(counts) == 10 and sum(counts) == len(data.splits["train"][1]) and min(counts) > 0
