"""A LightningDataModule over a data set held whole as uint8 tensors, batched and augmented on device.

A new data set subclasses `TensorImageDataModule` and implements `load_arrays`, plus a config file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from project.config import UserError, plain
from project.data.augment import BatchAugment, normalize, resize


class TensorBatchLoader:
    """Yields (uint8 images, int64 labels) batches by indexing one tensor; shards across ranks.

    Each pass reshuffles with `seed + epoch`, so runs are reproducible and every rank of a
    distributed job sees a disjoint share of the same permutation (rank r takes every world_size-th
    index from r). Training pads by wrapping (`pad=True`) so every rank runs the same number of steps,
    as DDP's gradient all-reduce needs. Evaluation does not pad (`pad=False`): shards may differ by one
    image, but no image is counted twice, and torchmetrics' cross-rank sums give exactly the
    single-process metric.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        weights: torch.Tensor | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.pad = seed, rank, world_size, pad
        # per-image sampling weights (data.sampler=balanced): each pass draws len(images) indices with
        # replacement, so rare classes are seen as often as common ones
        self.weights = weights
        self.epoch = 0

    def shard_size(self) -> int:
        """How many images this rank sees per pass."""
        n = len(self.images)
        if self.pad:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))

    def _indices(self) -> torch.Tensor:
        n = len(self.images)
        if self.shuffle and self.weights is not None:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        elif self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.pad:  # wrap around so every rank has the same count
                order = torch.cat([order, order[: self.shard_size() * self.world_size - n]])
            order = order[self.rank :: self.world_size]
        return order.to(self.images.device)

    def __len__(self) -> int:
        n = self.shard_size()
        # a shard smaller than one batch still trains on one (short) batch rather than on none
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._indices()
        self.epoch += 1
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.labels[idx]


class TensorImageDataModule(L.LightningDataModule):
    """Train/val/test splits as uint8 N×C×H×W tensors; augmentation and normalisation per batch on device."""

    class_names: Sequence[str] = ()
    # hyper-parameters that name a file or folder: the checkpoint records them absolute (or relative to
    # the run folder, for one inside it), so `eval`/`benchmark` find the same data from any folder
    path_hparams: tuple[str, ...] = ()
    # set on a data module rebuilt to test a trained model (`eval`, `benchmark`): its splits must be the
    # ones the model was trained on, never re-split (see `project.data.prepare.ensure_prepared`)
    keep_splits: bool = False

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        val_size: int = 5000,
        train_subset: int | None = None,
        split_seed: int = 0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: dict[str, Any] | None = None,
        channels_last: bool = False,
        data_on_device: bool = True,
        image_size: int | Sequence[int] | None = None,
        sampler: str | None = None,
    ) -> None:
        super().__init__()
        if sampler not in (None, "shuffle", "balanced"):
            raise UserError(f"data.sampler={sampler!r} must be null (shuffle) or balanced (weighted by class)")
        augment = plain(augment) or {}
        # plain containers only: the checkpoint must load with weights_only=True
        self.save_hyperparameters(
            {
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
                "val_size": val_size,
                "train_subset": train_subset,
                "split_seed": split_seed,
                "mean": [float(m) for m in mean],
                "std": [float(s) for s in std],
                "augment": augment,
                "channels_last": channels_last,
                "data_on_device": data_on_device,
                "image_size": plain(image_size),
                "sampler": sampler,
            },
            logger=False,
        )
        self.augment = BatchAugment(**augment)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_loader: TensorBatchLoader | None = None
        self._train_epoch = 0

    # --- what a data set implements -------------------------------------------------------------
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return train images, train labels, test images, test labels (uint8 N×C×H×W, int labels)."""
        raise NotImplementedError

    # --- shared machinery -----------------------------------------------------------------------
    # how an application's image is brought to the input size (see project.data.images.RESIZE_POLICIES)
    resize_policy = "stretch"

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.splits = self.load_splits()
        if self.hparams.get("image_size"):  # e.g. a pretrained backbone's input size (`data.image_size`)
            # a no-op (no copy) for splits already at that size, such as a prepared image folder
            self.splits = {k: (resize(x, self.hparams.image_size), y) for k, (x, y) in self.splits.items()}

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """train/val/test as (uint8 images, int64 labels) tensors: val carved (seeded) from `load_arrays`'s
        training images. A data set with splits of its own overrides this."""
        train_x, train_y, test_x, test_y = self.load_arrays()
        n_val = self.hparams.val_size
        if not 0 < n_val < len(train_x):
            raise UserError(f"data.val_size={n_val} must be between 1 and {len(train_x) - 1} (the training images)")
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_idx, train_idx = order[:n_val].numpy(), order[n_val:].numpy()
        if self.hparams.train_subset:
            train_idx = train_idx[: self.hparams.train_subset]

        def as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)), torch.from_numpy(
                np.asarray(y, dtype=np.int64)
            )

        return {
            "train": as_tensors(train_x[train_idx], train_y[train_idx]),
            "val": as_tensors(train_x[val_idx], train_y[val_idx]),
            "test": as_tensors(test_x, test_y),
        }

    def _device(self) -> torch.device:
        trainer = self.trainer
        if self.hparams.data_on_device and trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _sharded(self, split: str) -> bool:
        """Whether `split` is split across ranks: only while the Trainer runs that split's loop under DDP.
        The same loader asked for at another time (the post-fit parity check on rank 0, a notebook) gets
        the whole split."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return False
        fn = trainer.state.fn
        loops = {"train": (TrainerFn.FITTING,), "val": (TrainerFn.FITTING, TrainerFn.VALIDATING)}
        return fn in loops.get(split, (TrainerFn.TESTING,))

    def _loader(self, split: str, train: bool, shard: bool | None = None) -> TensorBatchLoader:
        """Batches of `split` for this process. Under DDP a split is sharded across ranks (train padded to
        equal step counts, val/test not padded, see `TensorBatchLoader`); `shard` forces it either way."""
        images, labels = self.splits[split]
        device = self._device()
        trainer = self.trainer
        sharded = self._sharded(split) if shard is None else shard and trainer is not None
        return TensorBatchLoader(
            images.to(device),
            labels.to(device),
            batch_size=self.hparams.batch_size if train else self.hparams.eval_batch_size,
            shuffle=train,
            drop_last=train,
            seed=self.hparams.split_seed,
            rank=trainer.global_rank if sharded else 0,
            world_size=trainer.world_size if sharded else 1,
            pad=train,
            weights=self.sample_weights(labels) if train and self.hparams.get("sampler") == "balanced" else None,
        )

    def sample_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """1 / (images of its class) per image: every class is drawn equally often."""
        counts = torch.bincount(labels.cpu(), minlength=max(self.num_classes, int(labels.max()) + 1)).double()
        return (1.0 / counts.clamp(min=1))[labels.cpu()]

    def train_dataloader(self) -> TensorBatchLoader:
        self._train_loader = self._loader("train", train=True)
        self._train_loader.epoch = self._train_epoch  # > 0 when resuming (load_state_dict)
        return self._train_loader

    def val_dataloader(self, shard: bool | None = None) -> TensorBatchLoader:
        return self._loader("val", train=False, shard=shard)

    def test_dataloader(self, shard: bool | None = None) -> TensorBatchLoader:
        return self._loader("test", train=False, shard=shard)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to draw the same batches as an uninterrupted one (saved in checkpoints):
        the training loader's pass counter (it seeds the shuffle) and the augmentation's generators."""
        epoch = self._train_loader.epoch if self._train_loader is not None else self._train_epoch
        return {"train_epoch": epoch, "augment": self.augment.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._train_epoch = int(state.get("train_epoch", 0))
        self.augment.load_state_dict(state.get("augment", {}))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            images = self.augment(images)
        return self.preprocess(images), labels

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch → the normalised float batch the network takes."""
        return normalize(images, self.hparams.mean, self.hparams.std, self.hparams.channels_last)

    def class_counts(self) -> list[int]:
        """Training images per class (class-weighted loss, data card)."""
        if not self.splits:
            self.setup()
        return torch.bincount(self.splits["train"][1], minlength=self.num_classes).tolist()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def input_spec(self) -> dict[str, Any]:
        """What an application must do to an image before the network sees it (saved in checkpoints)."""
        if not self.splits:
            self.setup()
        _, c, h, w = self.splits["test"][0].shape
        return {
            "channels": int(c),
            "height": int(h),
            "width": int(w),
            "value_range": [0, 255],
            "mean": [float(m) for m in self.hparams.mean],
            "std": [float(s) for s in self.hparams.std],
            "resize": self.resize_policy,
            "class_names": list(self.class_names),
        }
