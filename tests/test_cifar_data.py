"""CIFAR-10 data: binary parsing, where the data comes from (folder, archive, download), the seeded split, and
the batch-wise augmentation. All on a small archive in the official layout (tests/cifar_archive.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from project.config import UserError
from project.data.augment import BatchAugment, normalize, random_crop, random_flip
from project.data.cifar10 import ARCHIVE, FOLDER, RECORD_BYTES, TEST_FILE, CIFAR10DataModule, read_batch
from tests.cifar_archive import write_cifar_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One fake `cifar-10-binary.tar.gz` (300 training, 200 test images) and its md5, shared read-only."""
    return write_cifar_archive(tmp_path_factory.mktemp("source"))


def datamodule(data_dir: Path, md5: str | None, **kwargs) -> CIFAR10DataModule:
    return CIFAR10DataModule(data_dir=str(data_dir), md5=md5, **{"val_size": 50, **kwargs})


def test_archive_is_checked_extracted_and_parsed(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, md5 = archive
    (tmp_path / ARCHIVE).write_bytes(path.read_bytes())
    dm = datamodule(tmp_path, md5)
    dm.setup()
    folder = tmp_path / FOLDER
    assert (folder / TEST_FILE).is_file()

    images, labels = read_batch(folder / "data_batch_1.bin")
    assert images.shape == (60, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() <= 9
    first = (folder / "data_batch_1.bin").read_bytes()[:RECORD_BYTES]
    assert labels[0] == first[0]
    assert images[0].tobytes() == first[1:]  # R plane, G plane, B plane, each row-major
    assert np.array_equal(images[0, 1].ravel(), np.frombuffer(first[1 + 1024 : 1 + 2048], np.uint8))

    train_x, train_y = dm.splits["train"]
    assert train_x.dtype == torch.uint8 and train_x.shape == (250, 3, 32, 32)
    assert train_y.dtype == torch.int64
    assert dm.splits["test"][0].shape == (200, 3, 32, 32)  # the official test batch, untouched
    assert dm.input_spec()["class_names"][0] == "airplane"


def test_extracted_folder_is_used_without_the_archive(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, md5 = archive
    source = tmp_path / "source" / ARCHIVE
    source.parent.mkdir()
    source.write_bytes(path.read_bytes())
    datamodule(source, md5).prepare_data()  # data_dir may name the archive itself: extracted beside it
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (source.parent / FOLDER).rename(data_dir / FOLDER)
    dm = datamodule(data_dir, md5, download=False)
    dm.setup()
    assert len(dm.splits["test"][0]) == 200
    assert not (data_dir / ARCHIVE).exists()


def test_download_checks_md5_then_extracts(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, md5 = archive
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "cifar10"), url=path.as_uri(), md5=md5, val_size=50)
    dm.setup()
    assert (tmp_path / "cifar10" / ARCHIVE).is_file()
    assert not (tmp_path / "cifar10" / (ARCHIVE + ".part")).exists()
    assert len(dm.splits["val"][0]) == 50


def test_download_with_wrong_md5_is_deleted_and_reported(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = archive
    dm = CIFAR10DataModule(data_dir=str(tmp_path), url=path.as_uri(), md5="0" * 32, val_size=50)
    with pytest.raises(UserError, match=r"md5 .* expected 0{32}.*partial file was deleted"):
        dm.setup()
    assert list(tmp_path.iterdir()) == []  # neither the archive nor a .part left behind


def test_placed_archive_with_wrong_md5_is_refused(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = archive
    (tmp_path / ARCHIVE).write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="damaged or not the CIFAR-10 binary release"):
        datamodule(tmp_path, "0" * 32).setup()
    assert (tmp_path / ARCHIVE).is_file()  # the user's own file is not deleted


def test_offline_error_says_which_file_goes_where(tmp_path: Path) -> None:
    data_dir = tmp_path / "cifar10"
    url = (tmp_path / "nowhere" / ARCHIVE).as_uri()  # fails like a machine with no network
    with pytest.raises(UserError) as err:
        CIFAR10DataModule(data_dir=str(data_dir), url=url, val_size=50).setup()
    message = str(err.value)
    assert f"Put {ARCHIVE} (md5 c32a1d4ab5d03f1284b67883e8d87530) in {data_dir}" in message
    assert "\n" not in message
    assert not data_dir.exists()  # nothing half-made left behind
    with pytest.raises(UserError, match=f"put {ARCHIVE} .* in {data_dir}"):
        CIFAR10DataModule(data_dir=str(data_dir), download=False).setup()


def test_split_is_seeded_disjoint_and_subsettable(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, md5 = archive

    def splits(**kwargs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        dm = datamodule(path, md5, **kwargs)
        dm.setup()
        return dm.splits

    a, b, other = splits(split_seed=1), splits(split_seed=1), splits(split_seed=2)
    assert torch.equal(a["val"][0], b["val"][0]) and torch.equal(a["train"][1], b["train"][1])
    assert not torch.equal(a["val"][0], other["val"][0])
    train_rows = {bytes(x.numpy()) for x in a["train"][0]}
    assert not train_rows & {bytes(x.numpy()) for x in a["val"][0]}
    assert len(train_rows) + len(a["val"][0]) == 300
    small = splits(split_seed=1, train_subset=40)
    assert len(small["train"][0]) == 40 and torch.equal(small["val"][0], a["val"][0])
    with pytest.raises(UserError, match="val_size"):  # a config mistake: one line, not a traceback
        splits(val_size=300)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_crop_matches_reflect_padding_and_moves_images(batch: torch.Tensor) -> None:
    out = random_crop(batch, 4, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    # the same draws as the crop above, applied to an explicitly padded image
    gen = torch.Generator().manual_seed(1)
    dy, dx = (torch.randint(0, 9, (64,), generator=gen) for _ in range(2))
    padded = F.pad(batch.float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    for i in range(64):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32])
    moved = (dy != 4) | (dx != 4)
    assert moved.sum() > 40 and not torch.equal(out[moved], batch[moved])
    assert torch.equal(random_crop(batch, 0), batch)


def test_flip_mirrors_about_half(batch: torch.Tensor) -> None:
    out = random_flip(batch, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, b.flip(-1)) for o, b in zip(out, batch, strict=True)])
    kept = torch.tensor([torch.equal(o, b) for o, b in zip(out, batch, strict=True)])
    assert torch.all(flipped ^ kept) and 16 < flipped.sum() < 48


def test_augment_is_deterministic_under_a_seed(batch: torch.Tensor) -> None:
    first = BatchAugment(crop_padding=4, flip=True, seed=5)(batch)
    again = BatchAugment(crop_padding=4, flip=True, seed=5)(batch)
    other = BatchAugment(crop_padding=4, flip=True, seed=6)(batch)
    assert first.shape == batch.shape and torch.equal(first, again) and not torch.equal(first, other)


def test_normalize_standardises_and_keeps_channels_last(batch: torch.Tensor) -> None:
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    out = normalize(batch, mean, std, channels_last=True)
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
