"""The split rule: a file's split depends on its own relative path and the seed, never on the other files."""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path

import pytest

from project.data.image_folder import ImageFolderDataModule
from project.data.scan import SPLIT_RULE_VERSION, assign_splits, hashed_split, scan_folder, split_point
from tests.image_files import COLOURS, class_folder, noisy, write

FRACTIONS = {"val_fraction": 0.15, "test_fraction": 0.15}


def splits_of(root: Path, seed: int = 3) -> tuple[dict[str, str], list[str]]:
    """relpath → split for the folder as it is now, and the small classes."""
    entries = scan_folder(root).entries
    small = assign_splits(entries, seed=seed, **FRACTIONS)
    return {e.relpath: e.split for e in entries}, small


def test_adding_removing_or_renaming_other_files_never_moves_a_file(tmp_path: Path) -> None:
    rng = random.Random(0)
    root = tmp_path / "photos"
    for label in ("cat", "dog", "owl"):
        for i in range(rng.randint(8, 30)):  # owl may start small and grow past the threshold, or not
            write_empty(root / label / f"{i:03d}.png")
    before, _ = splits_of(root)
    seen_splits: set[str] = set()
    for step in range(200):
        files = sorted(root.rglob("*.png"))
        op = rng.choice(("add", "add", "remove", "rename"))
        if op == "add" or len(files) < 5:
            label = rng.choice(("cat", "dog", "owl"))
            write_empty(root / label / rng.choice(("", "sub/")) / f"new{step}.PNG")
        elif op == "remove":
            rng.choice(files).unlink()
        else:
            victim = rng.choice(files)
            victim.rename(victim.with_name(f"renamed{step}{victim.suffix}"))
        after, _ = splits_of(root)
        for relpath in before.keys() & after.keys():
            # every file keeps its split, a class small or large, growing past any size or shrinking; the
            # only exception is a file the minimum rule moves off its hash split (a class the hash left
            # without a test, val or train image), before or after the change
            if after[relpath] != before[relpath]:
                assert forced(relpath, before) or forced(relpath, after), f"step {step} ({op}) moved {relpath}"
        for label in ("cat", "dog", "owl"):
            assert sum(forced(p, after) for p in after if p.startswith(f"{label}/")) <= 2
        seen_splits |= set(after.values())
        before = after
    assert seen_splits == {"train", "val", "test"}


def forced(relpath: str, splits: dict[str, str]) -> bool:
    """The file's split is not the one its hash gives: the minimum rule put it there."""
    return splits[relpath] != hashed_split(split_point(3, relpath), **FRACTIONS)


def write_empty(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # the split needs no pixels: scan and assign_splits decode nothing


def test_a_small_class_takes_the_minimum_rule_and_a_large_one_the_hash(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    names = (f"{i}.png" for i in range(1000))
    for name in [n for n in names if hashed_split(split_point(3, f"rare/{n}"), **FRACTIONS) == "train"][:5]:
        write_empty(root / "rare" / name)  # five files the hash would all keep in train
    for i in range(40):
        write_empty(root / "common" / f"{i}.png")
    splits, small = splits_of(root)
    rare = sorted((p for p in splits if p.startswith("rare/")), key=lambda p: split_point(3, p))
    hashed = [hashed_split(split_point(3, p), **FRACTIONS) for p in rare]
    assert set(hashed) == {"train"}
    assert small == ["rare"] and {splits[p] for p in rare} == {"train", "val", "test"}
    moved = [p for p in rare if splits[p] != hashed[rare.index(p)]]
    assert len(moved) == 2
    assert all(hashed[rare.index(p)] == "train" for p in moved)  # topped up from train ...
    train_points = [split_point(3, p) for p, h in zip(rare, hashed, strict=True) if h == "train"]
    assert sorted(split_point(3, p) for p in moved) == sorted(train_points)[: len(moved)]  # ... smallest first
    for relpath, split in splits.items():
        if relpath.startswith("common/"):
            assert split == hashed_split(split_point(3, relpath), **FRACTIONS)


@pytest.mark.parametrize(("seed", "fraction"), [(0, 0.1), (3, 0.15), (1, 0.2)])
def test_a_class_crossing_any_size_moves_no_hashed_file(tmp_path: Path, seed: int, fraction: float) -> None:
    """Growing a class one file at a time from 1 to 30 images: only the (at most two) files the minimum rule
    moved off their hash split may change split, whatever size the class passes through."""
    fractions = {"val_fraction": fraction, "test_fraction": fraction}
    root = tmp_path / "photos"

    def splits() -> dict[str, str]:
        entries = scan_folder(root).entries
        assign_splits(entries, seed=seed, **fractions)
        return {e.relpath: e.split for e in entries}

    def off_hash(relpath: str, now: dict[str, str]) -> bool:
        return now[relpath] != hashed_split(split_point(seed, relpath), **fractions)

    before: dict[str, str] = {}
    for i in range(30):
        write_empty(root / "h" / f"{i}.png")
        after = splits()
        for relpath in before:
            if after[relpath] != before[relpath]:
                assert off_hash(relpath, before) or off_hash(relpath, after), f"adding {i}.png moved {relpath}"
        assert sum(off_hash(p, after) for p in after) <= 2  # the minimum rule touches two files at most
        before = after


def test_prepare_records_the_rule_names_small_classes_and_rebuilds_an_old_set(tmp_path: Path, caplog) -> None:
    root = class_folder(tmp_path / "imgs", per_class=12)  # 12 × 0.15 ≥ 1: hashed
    for i in range(3):
        write(root / "rare" / f"r{i}.png", noisy(COLOURS["red"], seed=500 + i))

    def prepare() -> ImageFolderDataModule:
        dm = ImageFolderDataModule(
            root=str(root), data_dir=str(tmp_path / "data"), image_size=8, workers=1, split_seed=3, **FRACTIONS
        )
        dm.prepared()
        return dm

    dm = prepare()
    meta = json.loads((dm.prepared_dir / "meta.json").read_text())
    small = meta["split_rule"]["small_classes"]
    assert meta["split_rule"]["version"] == SPLIT_RULE_VERSION and "rare" in small  # 3 files: no test by hash
    hashed: dict[str, set[str]] = {}
    with open(dm.prepared_dir / "manifest.csv") as f:
        for row in csv.DictReader(f):
            hashed.setdefault(row["label"], set()).add(hashed_split(split_point(3, row["relpath"]), **FRACTIONS))
            if row["label"] not in small:
                assert row["split"] == hashed_split(split_point(3, row["relpath"]), **FRACTIONS)
    assert small == sorted(label for label, splits in hashed.items() if splits != {"train", "val", "test"})
    assert "`rare`" in (dm.prepared_dir / "data_card.md").read_text()
    assert json.loads((dm.prepared_dir / "data_card.json").read_text())["split_rule"]["small_classes"] == small

    # a set made before the rule was recorded (rule 1) is rebuilt, with one line saying why
    old = {k: v for k, v in meta.items() if k != "split_rule"}
    (dm.prepared_dir / "meta.json").write_text(json.dumps(old))
    with caplog.at_level(logging.INFO, logger="project.data.prepare"):
        rebuilt = prepare().prepared()
    lines = [r.getMessage() for r in caplog.records if r.name == "project.data.prepare"]
    assert len(lines) == 1 and "split rule 1" in lines[0] and caplog.records[0].levelno == logging.WARNING
    assert rebuilt["split_rule"]["version"] == SPLIT_RULE_VERSION
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="project.data.prepare"):
        assert prepare().prepared()["key"] == rebuilt["key"]
    assert not caplog.records  # current now: reused, nothing said


def test_a_trained_model_is_never_tested_on_a_re_split_set(tmp_path: Path) -> None:
    """`eval`/`benchmark` rebuild the data module a checkpoint recorded. If its prepared set was made by an
    older split rule, re-splitting it would put training images in the test split: refused in one line,
    and the set is left as it was. Training on the same folder still rebuilds it."""
    import pytest
    from omegaconf import OmegaConf

    from project.config import UserError
    from project.data.from_run import data_record, datamodule_for_checkpoint

    root = class_folder(tmp_path / "imgs", per_class=12)
    kwargs = {"root": str(root), "data_dir": str(tmp_path / "data"), "image_size": 8, "workers": 1, **FRACTIONS}
    trained = ImageFolderDataModule(**kwargs)
    meta = trained.prepared()
    old = {k: v for k, v in meta.items() if k != "split_rule"}  # as a set made by rule 1 records it
    (trained.prepared_dir / "meta.json").write_text(json.dumps(old))

    record = data_record(trained, tmp_path / "run")
    cfg = OmegaConf.create({"data": None, "ckpt_path": str(tmp_path / "run" / "checkpoints" / "best.ckpt")})
    tested = datamodule_for_checkpoint(cfg, {"state_dict": {}, **record})
    with pytest.raises(UserError, match=r"split by rule 1, and the model was trained on those splits"):
        tested.setup("test")
    assert json.loads((trained.prepared_dir / "meta.json").read_text()) == old  # not rebuilt
    assert ImageFolderDataModule(**kwargs).prepared()["split_rule"]["version"] == SPLIT_RULE_VERSION  # training


def test_in_a_small_class_the_hash_still_decides_all_but_two_files(tmp_path: Path) -> None:
    """Four files whose hash says test: the minimum rule keeps a train image by moving one of them, and
    leaves the other three in test (rule-1-style ranking would keep one test image and move the rest to
    val and train, and move them again as files are added)."""
    root = tmp_path / "photos"
    names = [
        n for n in (f"{i}.png" for i in range(5000)) if hashed_split(split_point(3, f"t/{n}"), **FRACTIONS) == "test"
    ]
    for name in names[:4]:
        write_empty(root / "t" / name)
    splits, small = splits_of(root)
    assert small == ["t"] and sorted(splits.values()) == ["test", "test", "test", "train"]
    for name in names[4:8]:  # more test-hashed files: the three stay in test, the forced one goes back
        write_empty(root / "t" / name)
        after, _ = splits_of(root)
        assert all(after[p] == "test" for p in splits if splits[p] == "test")
