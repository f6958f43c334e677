"""CIFAR-10 from the official binary release, parsed with numpy (no pickles), downloaded if absent.

Where the data comes from, first match wins:
1. the extracted folder `cifar-10-batches-bin/` in `data_dir` (or `data_dir` itself holding the batches);
2. the archive `cifar-10-binary.tar.gz` in `data_dir` (or `data_dir` pointing at the archive), md5-checked;
3. a download from `url` into `data_dir`, md5-checked before it is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from project.atomic import atomic_dir
from project.config import UserError
from project.data.tensor_data import TensorImageDataModule

log = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue pixel bytes
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One `.bin` batch file → uint8 images N×3×32×32 and int64 labels."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise UserError(
            f"{path} is not a CIFAR-10 binary batch ({raw.size} bytes is not a multiple of {RECORD_BYTES});"
            " delete the folder and let it be re-extracted"
        )
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CLASS_NAMES):
        raise UserError(f"{path} has label {labels.max()}; CIFAR-10 labels are 0..9 (is this CIFAR-100?)")
    return records[:, 1:].reshape(-1, *IMAGE_SHAPE), labels


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None) -> None:
    """Fetch `url` to `dest` via `dest.part`, renamed only once the checksum matches, so an interrupted or
    corrupted download never looks like a usable archive."""
    part = dest.with_name(dest.name + ".part")
    log.info("Downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            dest.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to write
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.0
            with open(part, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if total and done / total >= next_report:
                        log.info("  %3.0f%% of %.0f MB", 100 * done / total, total / 1e6)
                        next_report += 0.1
    except (urllib.error.URLError, OSError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise UserError(
            f"CIFAR-10 is not in {dest.parent} and downloading {url} failed ({reason}). Offline? Put "
            f"{dest.name} (md5 {md5 or MD5}) in {dest.parent}, or its extracted folder "
            f"{FOLDER}/ there, then run again."
        ) from None
    except BaseException:  # interrupted: never leave a partial file behind
        part.unlink(missing_ok=True)
        raise
    if md5 and (actual := md5sum(part)) != md5:
        part.unlink()
        raise UserError(
            f"downloaded {url} has md5 {actual}, expected {md5}: the partial file was deleted; run again"
            f" or put a good {dest.name} in {dest.parent}"
        )
    os.replace(part, dest)


def extract(archive: Path, dest_dir: Path) -> Path:
    """Unpack `archive` (refusing links and paths outside it: filter="data") and move its batch folder
    into `dest_dir` in one rename, so a half-extracted folder is never found."""
    target = dest_dir / FOLDER
    with atomic_dir(target) as tmp:
        content = tmp / ".archive"
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(content, filter="data")
        found = [p.parent for p in content.rglob(TEST_FILE)]
        if not found:
            raise UserError(f"{archive} holds no {TEST_FILE}: it is not the CIFAR-10 binary release")
        for item in found[0].iterdir():  # the batch folder's files become the folder's (renames, no copies)
            os.replace(item, tmp / item.name)
        shutil.rmtree(content)
    return target


class CIFAR10DataModule(TensorImageDataModule):
    """CIFAR-10: 50,000 training images (validation carved from them) and the official 10,000 test images."""

    class_names = CLASS_NAMES
    path_hparams = ("data_dir",)

    def __init__(
        self,
        data_dir: str = "data/cifar10",
        url: str = URL,
        md5: str | None = MD5,
        download: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        path = Path(data_dir).expanduser().absolute()  # absolute: error messages say exactly where
        pointed_at_archive = path.is_file() or path.name.endswith((".tar.gz", ".tgz"))
        self.root = path.parent if pointed_at_archive else path
        self.archive = path if pointed_at_archive else path / ARCHIVE
        self.url, self.md5, self.allow_download = url, md5, download
        # absolute: a run evaluated from another folder reads the same files, never downloads them again
        self.hparams.update(data_dir=str(path), url=url, md5=md5, download=download)

    def _batch_folder(self) -> Path | None:
        """The folder holding the batch files, if it is already there."""
        for folder in (self.root / FOLDER, self.root):
            if all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
                return folder
        return None

    def prepare_data(self) -> None:
        """Find or fetch the data and extract it (Lightning runs this on one process per node)."""
        if self.splits or self._batch_folder() is not None:  # already in memory, or on disk
            return
        archive = self.archive
        if archive.is_file():
            if self.md5 and (actual := md5sum(archive)) != self.md5:
                raise UserError(
                    f"{archive} has md5 {actual}, expected {self.md5}: it is damaged or not the CIFAR-10 binary"
                    " release; delete it to download again, or replace it"
                )
        elif self.allow_download:
            download(self.url, archive, self.md5)
        else:
            raise UserError(
                f"CIFAR-10 not found: put {ARCHIVE} (md5 {self.md5 or MD5}) from {self.url} in {archive.parent},"
                f" or its extracted folder {FOLDER}/ there (or set data.download=true)"
            )
        log.info("Extracting %s", archive)
        extract(archive, self.root)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        folder = self._batch_folder()
        if folder is None:
            self.prepare_data()  # called outside a Trainer (e.g. from a notebook)
            folder = self._batch_folder()
        if folder is None:
            missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (self.root / FOLDER / n).is_file()]
            raise UserError(f"{self.root / FOLDER} lacks {', '.join(missing)}: delete it to extract again")
        train = [read_batch(folder / name) for name in TRAIN_FILES]
        test_x, test_y = read_batch(folder / TEST_FILE)
        train_x = np.concatenate([x for x, _ in train])
        train_y = np.concatenate([y for _, y in train])
        return train_x, train_y, test_x, test_y
