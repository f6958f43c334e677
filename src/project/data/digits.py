"""scikit-learn's bundled handwritten digits (1,797 8×8 greyscale images): real data with no network."""

from __future__ import annotations

import numpy as np

from project.data.tensor_data import TensorImageDataModule


class DigitsDataModule(TensorImageDataModule):
    """Digits split into a seeded test set (`test_size`) and the rest; val is carved from the rest."""

    class_names = tuple(str(i) for i in range(10))

    def __init__(self, test_size: int = 360, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hparams["test_size"] = test_size

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # pixel values are 0..16: scale to the uint8 range every other image set uses
        images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[:, None, :, :]
        labels = digits.target.astype(np.int64)
        order = np.random.default_rng(self.hparams.split_seed + 1).permutation(len(images))
        test, train = order[: self.hparams.test_size], order[self.hparams.test_size :]
        return images[train], labels[train], images[test], labels[test]
