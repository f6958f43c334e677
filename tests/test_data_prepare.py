"""Preparing a user's images: layouts, CSV, bad files, duplicates, the cache, the card, the sampler."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from project.config import UserError
from project.data.from_run import saved_data_config
from project.data.image_folder import ImageCsvDataModule, ImageFolderDataModule
from project.data.tensor_data import TensorBatchLoader
from project.inference.preprocess import Preprocessor
from tests.image_files import COLOURS, class_folder, exif_rotated_jpeg, noisy, truncated_jpeg, write


def module(tmp_path: Path, root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 8)
    return ImageFolderDataModule(root=str(root), data_dir=str(tmp_path / "data"), workers=1, **kwargs)


def split_counts(meta: dict) -> dict[str, int]:
    return {split: sum(counts.values()) for split, counts in meta["counts"].items()}


def test_class_folders_are_split_stratified_and_seeded(tmp_path: Path) -> None:
    names = {"chat noir": COLOURS["red"], "été": COLOURS["green"], "blue": COLOURS["blue"]}  # unicode, spaces
    root = class_folder(tmp_path / "my photos", per_class=10, classes=names)
    dm = module(tmp_path, root, val_fraction=0.2, test_fraction=0.2)
    meta = dm.prepared()
    assert meta["class_names"] == sorted(names) and meta["layout"] == "class_folders"
    for name in names:  # every image of every class, nested folders included, each split by its own hash
        assert sum(meta["counts"][split][name] for split in ("train", "val", "test")) == 10
    assert all(split_counts(meta).values())
    dm.setup()
    images, labels = dm.splits["train"]
    assert images.shape == (split_counts(meta)["train"], 3, 8, 8) and images.dtype == torch.uint8
    assert labels.tolist() == sorted(labels.tolist())
    assert red_is_red(images[labels == meta["class_names"].index("chat noir")])
    # the split is written into the set: the same seed gives the same split, another seed another one
    manifest = (dm.prepared_dir / "manifest.csv").read_text()
    again = module(tmp_path, root, val_fraction=0.2, test_fraction=0.2, prepared_dir=str(tmp_path / "again"))
    again.prepared()
    assert (again.prepared_dir / "manifest.csv").read_text() == manifest
    other = module(tmp_path, root, val_fraction=0.2, test_fraction=0.2, split_seed=1, prepared_dir=str(tmp_path / "o"))
    other.prepared()
    assert (other.prepared_dir / "manifest.csv").read_text() != manifest
    assert {"relpath", "sha256", "bytes", "split", "label"} <= set(manifest.splitlines()[0].split(","))


def red_is_red(images: torch.Tensor) -> bool:
    mean = images.float().mean(dim=(0, 2, 3))
    return bool(mean[0] > mean[1] + 100)


def test_split_folders_with_and_without_val(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for split, n, seed in (("train", 5, 0), ("test", 2, 1000)):
        class_folder(root / split, per_class=n, seed=seed)
    meta = module(tmp_path, root, val_fraction=0.2).prepared()
    assert meta["layout"] == "split_folders"
    counts = split_counts(meta)  # val carved from train (each file by its hash), test kept
    assert counts["train"] + counts["val"] == 15 and counts["val"] > 0 and counts["test"] == 6
    class_folder(root / "val", per_class=1, seed=2000)
    meta = module(tmp_path, root, val_fraction=0.2).prepared()
    assert split_counts(meta) == {"train": 15, "val": 3, "test": 6}


def test_csv_source_with_and_without_split(tmp_path: Path) -> None:
    class_folder(tmp_path / "pics", per_class=4)
    rows = [
        (f"pics/{c}/img {i}.png" if i % 2 == 0 else f"pics/{c}/nested/deeper/img {i}.png", c)
        for c in COLOURS
        for i in range(4)
    ]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows([(p, c, "test" if p.endswith("3.png") else "train") for p, c in rows])
        writer.writerow(["pics/missing.png", "red", "train"])
    dm = ImageCsvDataModule(csv=str(tmp_path / "labels.csv"), data_dir=str(tmp_path / "data"), image_size=8, workers=1)
    meta = dm.prepared()
    assert meta["class_names"] == sorted(COLOURS) and meta["layout"] == "csv"
    assert split_counts(meta) == {"train": 6, "val": 3, "test": 3}  # no val rows: val carved from train
    card = json.loads((dm.prepared_dir / "data_card.json").read_text())
    assert {"path": "pics/missing.png", "reason": "file not found"} in card["skipped"]
    with open(tmp_path / "nosplit.csv", "w") as f:
        f.write("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows))
    meta = ImageCsvDataModule(csv=str(tmp_path / "nosplit.csv"), data_dir=str(tmp_path / "d2"), image_size=8).prepared()
    assert sum(split_counts(meta).values()) == 12 and split_counts(meta)["train"] >= 6


def bad_folder(root: Path) -> Path:
    class_folder(root, per_class=4)
    (root / "red" / "empty.png").write_bytes(b"")
    truncated_jpeg(root / "red" / "cut.jpg")
    (root / "blue" / "notes.txt").write_text("not an image")
    write(root / "green" / "huge.png", noisy(COLOURS["green"], (300, 300)))
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_bytes(b"garbage")  # a class with no valid image
    (root / "empty class").mkdir()
    write(root / "single" / "one.png", noisy(COLOURS["red"], seed=9))  # a class with one image
    (root / "stray.png").write_bytes(b"")  # not in a class folder
    return root


def test_bad_files_are_skipped_and_listed(tmp_path: Path, capsys) -> None:
    dm = module(tmp_path, bad_folder(tmp_path / "bad"), max_pixels=20_000)
    meta = dm.prepared()
    assert meta["class_names"] == ["blue", "green", "red", "single"]
    assert meta["counts"]["train"]["single"] == 1
    reasons = {s["path"]: s["reason"] for s in json.loads((dm.prepared_dir / "data_card.json").read_text())["skipped"]}
    assert "empty" in reasons["red/empty.png"]
    assert "truncated" in reasons["red/cut.jpg"]
    assert "not a recognised image" in reasons["blue/notes.txt"]
    assert "decompression-bomb" in reasons["green/huge.png"]
    assert "no valid image" in reasons["broken/"] and "no image file" in reasons["empty class/"]
    assert "class folder" in reasons["stray.png"]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "skipped 8 bad file(s)" in out  # one summary line
    card = (dm.prepared_dir / "data_card.md").read_text()
    assert "red/cut.jpg" in card and (dm.prepared_dir / "samples.png").stat().st_size > 1000


def test_on_bad_file_fail_names_the_file(tmp_path: Path) -> None:
    root = class_folder(tmp_path / "imgs", per_class=2)
    (root / "red" / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"red/empty\.png: empty file"):
        module(tmp_path, root, on_bad_file="fail").prepared()
    assert not list((tmp_path / "data" / "prepared").glob("*/meta.json"))  # nothing half-built left


def test_duplicates_across_splits_are_removed_from_val_and_test(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    class_folder(root / "train", per_class=4)
    class_folder(root / "test", per_class=2, seed=1000)
    shutil.copy(root / "train" / "red" / "img 0.png", root / "test" / "red" / "leak.png")
    shutil.copy(root / "train" / "blue" / "img 0.png", root / "train" / "blue" / "again.png")
    dm = module(tmp_path, root, val_fraction=0.0)
    meta = dm.prepared()
    dup = json.loads((dm.prepared_dir / "data_card.json").read_text())["duplicates"]
    assert dup["cross_split_removed"] == 1 and dup["within_split_copies"] == 1
    assert dup["cross_split_examples"] == [{"kept": "train/red/img 0.png", "removed": "test/red/leak.png"}]
    assert split_counts(meta)["test"] == 6


def test_cache_reuses_and_notices_added_changed_and_removed_files(tmp_path: Path) -> None:
    root = class_folder(tmp_path / "imgs", per_class=3)
    meta = module(tmp_path, root).prepared()
    images = next((tmp_path / "data" / "prepared").glob("*/images_train.npy"))
    stamp = images.stat().st_mtime_ns
    assert module(tmp_path, root).prepared()["key"] == meta["key"] and images.stat().st_mtime_ns == stamp  # no rebuild

    write(root / "red" / "new.png", noisy(COLOURS["red"], seed=77))
    added = module(tmp_path, root).prepared()
    assert added["key"] != meta["key"] and sum(split_counts(added).values()) == 10
    target = root / "blue" / "img 0.png"
    write(target, noisy(COLOURS["green"], seed=5))
    os.utime(target, ns=(1, 1))  # changed content, and a different modification time
    changed = module(tmp_path, root).prepared()
    assert changed["key"] != added["key"]
    (root / "green" / "img 0.png").unlink()
    removed = module(tmp_path, root).prepared()
    assert sum(split_counts(removed).values()) == 9
    assert module(tmp_path, root, image_size=10).prepared()["key"] != removed["key"]  # a setting changed
    assert len(list((tmp_path / "data" / "prepared").iterdir())) == 2  # the set and its lock, no leftovers


def test_prepared_tensors_equal_what_the_predictor_computes(tmp_path: Path) -> None:
    root = class_folder(tmp_path / "imgs", per_class=2, size=(30, 20), ext=".jpg")
    exif_rotated_jpeg(root / "red" / "phone.jpg")
    dm = module(tmp_path, root, image_size=12, resize="pad", val_fraction=0.0, test_fraction=0.0)
    dm.setup()
    spec = dm.input_spec()
    assert spec["resize"] == "pad" and spec["mean"] == dm.prepared()["mean"] and spec["class_names"] == sorted(COLOURS)
    preprocessor = Preprocessor.from_spec(spec)
    images, _ = dm.splits["train"]
    with open(dm.prepared_dir / "manifest.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    order = {r["relpath"]: i for i, r in enumerate(rows)}
    for relpath, i in order.items():
        assert torch.equal(preprocessor.to_uint8(str(root / relpath)), images[i]), relpath


def test_balanced_sampler_draws_classes_equally(tmp_path: Path) -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    images = torch.zeros(100, 1, 2, 2, dtype=torch.uint8)
    weights = 1.0 / torch.bincount(labels).double()[labels]
    loader = TensorBatchLoader(images, labels, batch_size=1000, shuffle=True, weights=weights, seed=3)
    drawn = torch.cat([y for _, y in loader] + [y for _, y in loader])
    assert len(drawn) == 200 and 0.35 < drawn.float().mean() < 0.65  # ~half from the 10 % class
    dm = module(tmp_path, class_folder(tmp_path / "imgs", per_class=3), sampler="balanced")
    dm.setup()
    assert dm.train_dataloader().weights is not None


def test_saved_data_config_resolves_against_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    config = {
        "data": {"_target_": "x.Y", "channels_last": "${model.channels_last}", "data_dir": "${paths.data_dir}/c"},
        "model": {"channels_last": True},
        "paths": {"data_dir": "/somewhere"},
    }
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    data = saved_data_config(run / "checkpoints" / "best.ckpt")
    assert data.channels_last is True and data.data_dir == "/somewhere/c"
    (run / ".hydra" / "config.yaml").write_text("data:\n  a: ${nowhere.b}\n")
    with pytest.raises(UserError, match="cannot be resolved"):
        saved_data_config(run / "checkpoints" / "best.ckpt")
    assert saved_data_config(tmp_path / "elsewhere.ckpt") is None


def test_a_folder_that_is_not_a_prepared_set_is_never_replaced(tmp_path: Path) -> None:
    """`data.prepared_dir` (typed, or read from a checkpoint's record) naming a folder of other files: one
    clear line, the files untouched (building would have swapped the folder out and deleted it)."""
    root = class_folder(tmp_path / "photos", per_class=3)
    precious = write(tmp_path / "documents" / "thesis.png", noisy(COLOURS["red"]))
    dm = module(tmp_path, root, prepared_dir=str(precious.parent))
    with pytest.raises(UserError, match="holds files but no prepared set"):
        dm.setup()
    assert precious.is_file() and sorted(precious.parent.iterdir()) == [precious]
