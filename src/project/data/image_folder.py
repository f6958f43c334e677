"""Your own images: a folder of class folders (`data=image_folder data.root=PATH`) or a CSV
(`data=image_csv data.csv=FILE`), prepared once into memory-mapped arrays (`project.data.prepare`)
and trained like any other tensor data set.

Class names are the folder names (or label strings), sorted. Mean/std come from the prepared set's
data card (train split) unless `data.mean`/`data.std` are given (a pretrained backbone's values).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from project.config import UserError
from project.data.card import CARD_FILES
from project.data.images import DEFAULT_MAX_PIXELS
from project.data.prepare import PrepSettings, default_prepared_dir, ensure_prepared, source_of
from project.data.scan import SPLITS
from project.data.tensor_data import TensorImageDataModule

log = logging.getLogger(__name__)


class ImageFolderDataModule(TensorImageDataModule):
    """A user's images, prepared (or reused) on first use; splits come from the prepared set."""

    # train/eval fit the model's class count and input channels to this data (project.data.fit)
    fits_model = True
    path_hparams = ("root", "csv", "prepared_dir")

    def __init__(
        self,
        root: str | None = None,
        csv: str | None = None,
        prepared_dir: str | None = None,
        data_dir: str = "data",
        image_size: int | Sequence[int] = 64,
        channels: int = 3,
        resize: str = "shorter_side_center_crop",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        on_bad_file: str = "skip",
        workers: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        self.source = source_of(root, csv)
        self.is_csv = bool(csv)
        self.settings = PrepSettings(
            image_size=image_size if isinstance(image_size, int) else list(image_size),
            channels=int(channels),
            resize=resize,
            val_fraction=float(val_fraction),
            test_fraction=float(test_fraction),
            split_seed=int(split_seed),
            max_pixels=int(max_pixels),
        )
        if (mean is None) != (std is None):
            raise UserError("give data.mean and data.std together (or neither: both then come from the data card)")
        if mean is not None and (len(mean) != self.settings.channels or len(std) != self.settings.channels):
            raise UserError(f"data.mean and data.std need {self.settings.channels} values each (data.channels)")
        placeholder = [0.5] * self.settings.channels
        super().__init__(mean=mean or placeholder, std=std or placeholder, split_seed=split_seed, **kwargs)
        directory = Path(prepared_dir) if prepared_dir else default_prepared_dir(self.source, data_dir)
        self.prepared_dir = directory.expanduser().absolute()
        self.on_bad_file, self.workers = on_bad_file, workers
        self._stats_from_card = mean is None
        self._meta: dict[str, Any] | None = None
        # absolute paths: the checkpoint's hyper-parameters rebuild this module from any folder
        self.hparams.update(
            root=str(self.source) if root else None,
            csv=str(self.source) if csv else None,
            prepared_dir=str(self.prepared_dir),
            image_size=self.settings.image_size,
            channels=self.settings.channels,
            resize=resize,
            val_fraction=self.settings.val_fraction,
            test_fraction=self.settings.test_fraction,
            max_pixels=self.settings.max_pixels,
            on_bad_file=on_bad_file,
        )
        self.resize_policy = resize

    # --- the prepared set -----------------------------------------------------------------------
    def prepared(self) -> dict[str, Any]:
        """The prepared set's meta.json, preparing it first when missing or stale (once per process)."""
        if self._meta is None:
            meta = ensure_prepared(
                self.source,
                self.is_csv,
                self.settings,
                self.prepared_dir,
                self.on_bad_file,
                self.workers,
                keep_splits=self.keep_splits,
            )
            if self._stats_from_card:
                self.hparams["mean"], self.hparams["std"] = list(meta["mean"]), list(meta["std"])
            self._meta = meta
        return self._meta

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]
        return list(self.prepared()["class_names"])

    def prepare_data(self) -> None:
        self.prepared()

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        meta = self.prepared()
        splits = {split: self._split_tensors(split) for split in SPLITS}
        if not len(splits["train"][1]):
            raise UserError(f"no training images in {self.source} (see {self.prepared_dir / 'data_card.md'})")
        for split in ("val", "test"):
            if not len(splits[split][1]):
                other = "test" if split == "val" else "val"
                fallback = other if len(splits[other][1]) else "train"
                log.warning("no %s images in %s: using the %s split for %s", split, meta["source"], fallback, split)
                splits[split] = splits[fallback]
        if self.hparams.train_subset:
            images, labels = splits["train"]
            splits["train"] = images[: self.hparams.train_subset], labels[: self.hparams.train_subset]
        return splits

    def _split_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.from_numpy(np.load(self.prepared_dir / f"labels_{split}.npy"))
        if not len(labels):
            c, (h, w) = self.settings.channels, self.settings.image_size
            return torch.zeros((0, c, h, w), dtype=torch.uint8), labels
        # copy-on-write memory map: pages are read as batches touch them, never the whole set at once
        images = np.load(self.prepared_dir / f"images_{split}.npy", mmap_mode="c")
        return torch.from_numpy(images), labels

    def setup(self, stage: str | None = None) -> None:
        fresh = not self.splits
        super().setup(stage)
        if fresh:
            self._publish_card()

    def input_spec(self) -> dict[str, Any]:
        self.prepared()  # mean/std from the card before the base class reads them
        return {**super().input_spec(), "exif_transpose": True}

    # --- the data card in the run folder and W&B --------------------------------------------------
    def _publish_card(self) -> None:
        trainer = self.trainer
        if trainer is None or not trainer.is_global_zero:
            return
        target = Path(trainer.default_root_dir) / "data_card"
        target.mkdir(parents=True, exist_ok=True)
        for name in CARD_FILES:
            if (self.prepared_dir / name).is_file():
                shutil.copy2(self.prepared_dir / name, target / name)
        log_card_to_wandb(trainer, self.prepared_dir)


def log_card_to_wandb(trainer: Any, directory: Path) -> None:
    """With a W&B logger: the card as a table (class × split counts) and the sample grid as an image."""
    from project.tracking.wandb_extras import active_wandb_run

    run = active_wandb_run(trainer)
    if run is None:
        return
    import json

    import wandb

    card = json.loads((directory / "data_card.json").read_text())
    rows = [[c, *(card["images_per_class"][s][c] for s in SPLITS)] for c in card["classes"]]
    payload: dict[str, Any] = {"data/card": wandb.Table(columns=["class", *SPLITS], data=rows)}
    for name in ("samples", "class_counts"):
        if (directory / f"{name}.png").is_file():
            payload[f"data/{name}"] = wandb.Image(str(directory / f"{name}.png"))
    run.log(payload)
    run.summary.update({"data/imbalance_ratio": card["imbalance_ratio"], "data/skipped": len(card["skipped"])})


class ImageCsvDataModule(ImageFolderDataModule):
    """`data=image_csv data.csv=FILE`: rows `path,label[,split]`, paths relative to the CSV's folder."""

    def __init__(self, csv: str | None = None, **kwargs: Any) -> None:
        if not csv:
            raise UserError("data.csv is required: pass data.csv=FILE (columns path,label[,split])")
        super().__init__(csv=csv, **kwargs)
