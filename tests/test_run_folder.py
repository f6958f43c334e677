"""Any command from the run alone, from any folder: the checkpoint records its data module with every path
resolved at training time, so `eval` and `benchmark` started elsewhere (or on a moved run folder) test
the same images without preparing or downloading them again."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from project.config import UserError
from project.data.cifar10 import CIFAR10DataModule
from project.data.digits import DigitsDataModule
from project.data.from_run import (
    RECORD_KEY,
    RUN_RELATIVE_KEY,
    data_record,
    datamodule_for_checkpoint,
    recorded_datamodule,
)
from project.data.image_folder import ImageFolderDataModule
from tests.conftest import read_metrics, run_cli, run_folder
from tests.image_files import class_folder

QUICK_BENCHMARK = ["deploy.backends=[eager]", "deploy.batch_sizes=[1]", "deploy.timing.min_duration_s=0.05"]


def figures_of(folder: Path) -> dict:
    summary = read_metrics(folder)
    return {**summary, "metrics": {k: v for k, v in summary["metrics"].items() if k.startswith("test/")}}


def prepared_state(directory: Path) -> dict[str, int]:
    """Every file of a prepared set with its modification time: unchanged means nothing was rebuilt."""
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


def test_eval_and_benchmark_from_another_folder_and_a_moved_run(tmp_path: Path) -> None:
    folder_a, folder_b = tmp_path / "A", tmp_path / "B"
    folder_b.mkdir()
    class_folder(folder_a / "photos", per_class=6)
    common = ["extras.print_config=false"]
    train = run_cli(
        "train", "data=image_folder", "data.root=photos", "data.image_size=16", "model=digits_tiny",
        "trainer.max_epochs=1", "deploy.enabled=false", *common, log_dir=folder_a / "logs", cwd=folder_a,
    )  # fmt: skip
    run = run_folder(train)
    trained = figures_of(run)
    assert trained["metrics"] and trained["best_checkpoint"]
    ckpt = Path(trained["best_checkpoint"])
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    record = checkpoint[RECORD_KEY]
    assert record["root"] == str(folder_a / "photos")  # resolved against folder A when it trained
    prepared = Path(record["prepared_dir"])
    assert prepared.parent == folder_a / "data" / "prepared" and checkpoint[RUN_RELATIVE_KEY] == []
    before = prepared_state(prepared)

    evaluated = run_cli("eval", f"ckpt_path={ckpt}", *common, log_dir=folder_b / "logs", cwd=folder_b)
    result = figures_of(run_folder(evaluated))
    assert result["metrics"] == trained["metrics"]  # the same images: every figure to the last digit
    assert result["test_report"] == trained["test_report"]
    assert "preparing" not in evaluated.stdout + evaluated.stderr
    assert prepared_state(prepared) == before and not (folder_b / "data").exists()  # reused, not rebuilt

    moved = tmp_path / "elsewhere" / run.name
    shutil.move(run, moved)
    moved_ckpt = moved / ckpt.relative_to(run)
    again = run_cli("eval", f"ckpt_path={moved_ckpt}", *common, log_dir=folder_b / "logs", cwd=folder_b)
    assert figures_of(run_folder(again))["metrics"] == trained["metrics"]

    bench = run_cli(
        "benchmark", f"ckpt_path={moved_ckpt}", *QUICK_BENCHMARK, *common, log_dir=folder_b / "logs", cwd=folder_b
    )
    report = json.loads((run_folder(bench) / "benchmark.json").read_text())
    assert report["parity_data"]["source"] == "test split of ImageFolderDataModule"
    assert prepared_state(prepared) == before and not (folder_b / "data").exists()


def test_a_path_inside_the_run_folder_moves_with_it(tmp_path: Path) -> None:
    photos = class_folder(tmp_path / "photos", per_class=4)
    run = tmp_path / "run"
    data = ImageFolderDataModule(root=str(photos), prepared_dir=str(run / "prepared"), image_size=8)
    data.setup()
    entries = data_record(data, run)
    assert entries[RECORD_KEY]["prepared_dir"] == "prepared" and entries[RUN_RELATIVE_KEY] == ["prepared_dir"]
    assert entries[RECORD_KEY]["root"] == str(photos)
    before = prepared_state(run / "prepared")

    moved = tmp_path / "archive" / "run"
    shutil.move(run, moved)
    rebuilt = recorded_datamodule(moved / "checkpoints" / "best.ckpt", entries)
    assert isinstance(rebuilt, ImageFolderDataModule) and rebuilt.prepared_dir == moved / "prepared"
    rebuilt.setup()
    assert prepared_state(moved / "prepared") == before  # found where it moved to, not prepared again
    assert torch.equal(rebuilt.splits["test"][0], data.splits["test"][0])
    assert rebuilt.hparams.mean == data.hparams.mean and rebuilt.hparams.std == data.hparams.std


def test_a_checkpoint_without_the_record_uses_its_saved_run_config(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    saved = {"data": {"_target_": "project.data.digits.DigitsDataModule", "val_size": 100, "test_size": 200}}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    cfg = OmegaConf.create({"data": None, "ckpt_path": str(run / "checkpoints" / "old.ckpt")})
    with caplog.at_level(logging.INFO, logger="project.data.from_run"):
        data = datamodule_for_checkpoint(cfg, {"state_dict": {}})
    assert isinstance(data, DigitsDataModule) and data.hparams.test_size == 200
    assert "records no data config" in caplog.text


def test_a_tampered_saved_run_config_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """The fallback for old checkpoints reads `.hydra/config.yaml`: its nodes are checked like a record's."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    payload = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    saved = {"data": {"_target_": "project.data.digits.DigitsDataModule", "val_size": payload}}
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(saved))
    cfg = OmegaConf.create({"data": None, "ckpt_path": str(run / "checkpoints" / "old.ckpt")})
    with pytest.raises(UserError, match="refusing"):
        datamodule_for_checkpoint(cfg, {"state_dict": {}})
    assert victim.read_text() == "keep me"


def test_the_users_data_override_wins_over_the_record(tmp_path: Path) -> None:
    recorded = data_record(DigitsDataModule(val_size=100), tmp_path)
    cfg = OmegaConf.create(
        {"data": {"_target_": "project.data.digits.DigitsDataModule", "val_size": 50}, "ckpt_path": "x.ckpt"}
    )
    assert datamodule_for_checkpoint(cfg, recorded).hparams.val_size == 50
    cfg.data = None
    assert datamodule_for_checkpoint(cfg, recorded).hparams.val_size == 100


@pytest.mark.parametrize(
    "config",
    [
        {"_target_": "os.system", "command": "true"},
        {"_target_": "project.data.digits.DigitsDataModule", "augment": {"_target_": "builtins.open"}},
        {"_target_": "project.data.digits.DigitsDataModule", "no_such_argument": 1},
    ],
)
def test_a_tampered_record_is_refused_before_anything_runs(tmp_path: Path, config: dict) -> None:
    with pytest.raises(UserError, match=r"refusing|cannot be rebuilt"):
        recorded_datamodule(tmp_path / "x.ckpt", {RECORD_KEY: config})


def test_a_run_relative_key_must_name_a_recorded_path(tmp_path: Path) -> None:
    config = {"_target_": "project.data.digits.DigitsDataModule", "val_size": 100}
    for in_run in (["val_size"], "val_size"):
        with pytest.raises(UserError, match="refusing"):
            recorded_datamodule(tmp_path / "x.ckpt", {RECORD_KEY: config, RUN_RELATIVE_KEY: in_run})


def test_cifar_is_found_where_it_was_from_another_folder(tmp_path: Path, monkeypatch) -> None:
    """A relative `data.data_dir` is recorded as resolved in training: evaluated from another folder the
    module reads the same files (no second download) and keeps `download=false` if it was set."""
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "A")
    entries = data_record(CIFAR10DataModule(data_dir="data/cifar10", download=False, val_size=100), tmp_path / "run")
    assert entries[RECORD_KEY]["data_dir"] == str(tmp_path / "A" / "data" / "cifar10")
    monkeypatch.chdir(tmp_path / "B")
    rebuilt = recorded_datamodule(tmp_path / "run" / "checkpoints" / "best.ckpt", entries)
    assert rebuilt.root == tmp_path / "A" / "data" / "cifar10" and rebuilt.allow_download is False
