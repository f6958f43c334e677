"""A folder of a user's photos through the real commands: prepare → train → eval → make benchmark →
predict on the folder, with predictions equal to the eager network on the prepared tensors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from project.config import UserError
from project.data.augment import normalize
from project.data.from_run import build_datamodule
from project.deploy.checkpoint import load_net
from tests.conftest import read_metrics, run_cli, run_folder
from tests.image_files import class_folder, exif_rotated_jpeg

ROOT = Path(__file__).resolve().parents[1]


def prepared_images(directory: Path) -> dict[str, torch.Tensor]:
    """relative path → prepared uint8 image, for every split of a prepared set."""
    with open(directory / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for split in ("train", "val", "test"):
        in_split = [r["relpath"] for r in rows if r["split"] == split]
        if in_split:
            images = np.load(directory / f"images_{split}.npy")
            out.update({rel: torch.from_numpy(images[i]) for i, rel in enumerate(in_split)})
    return out


def test_folder_to_predictions_with_the_real_cli(tmp_path: Path) -> None:
    photos = class_folder(tmp_path / "my photos", per_class=8, ext=".jpg")
    exif_rotated_jpeg(photos / "red" / "phone.jpg")
    common = [f"paths.data_dir={tmp_path / 'data'}", "extras.print_config=false"]
    data = ["data=image_folder", f"data.root={photos}", "data.image_size=16"]
    logs = tmp_path / "logs"

    first = run_cli("prepare", *data, *common, log_dir=logs)
    assert "classes: blue, green, red" in first.stdout and "preparing" in first.stdout + first.stderr
    again = run_cli("prepare", *data, *common, log_dir=logs)
    assert "preparing" not in again.stdout + again.stderr and "prepared set:" in again.stdout  # nothing decoded twice
    prepared = Path(next(x for x in again.stdout.splitlines() if x.startswith("prepared set: ")).split(": ", 1)[1])

    train = run_cli(
        "train", *data, *common, "model=digits_tiny", "trainer.max_epochs=2",
        "deploy.backends=[eager,onnxruntime]", "deploy.batch_sizes=[1]", "logger=many", "data.sampler=balanced",
        log_dir=logs,
    )  # fmt: skip
    run = run_folder(train)
    assert "preparing" not in train.stdout + train.stderr  # train reused the prepared set
    assert (run / "data_card" / "data_card.md").is_file() and (run / "data_card" / "samples.png").is_file()
    media = run / "wandb" / "latest-run" / "files" / "media"
    assert list((media / "images" / "data").glob("samples*.png")) and list((media / "table" / "data").iterdir())
    ckpt = read_metrics(run)["best_checkpoint"]
    assert json.loads((run / "deploy" / "classes.json").read_text()) == ["blue", "green", "red"]

    evaluated = run_cli("eval", f"ckpt_path={ckpt}", *common, log_dir=logs)  # data config from the run
    assert read_metrics(run_folder(evaluated))["metrics"]["test/acc"] == read_metrics(run)["metrics"]["test/acc"]

    bench = subprocess.run(  # `make benchmark`: the newest run, with nothing but its checkpoint
        [sys.executable, str(ROOT / "benchmarks" / "inference_speed.py"), "--quick", "--log-dir", str(logs),
         "deploy.backends=[eager]", "deploy.batch_sizes=[1]", *common],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-2000:]
    assert "eager" in bench.stdout and "Error" not in bench.stdout

    output = tmp_path / "preds.jsonl"
    run_cli("predict", f"bundle={run}", f"inputs={photos}", f"output={output}", log_dir=logs)
    predictions = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(predictions) == 25  # nested class folders and the EXIF photo included

    net, _, spec = load_net(ckpt)
    images = prepared_images(prepared)
    for prediction in predictions:
        relpath = Path(prediction["input"]).relative_to(photos).as_posix()
        batch = normalize(images[relpath][None], spec["mean"], spec["std"])
        with torch.inference_mode():
            probs = torch.softmax(net(batch), dim=1)[0]
        assert prediction["label"] == spec["class_names"][int(probs.argmax())], relpath
        assert abs(prediction["score"] - float(probs.max())) < 1e-4, relpath


def test_data_mistakes_are_one_line(tmp_path: Path, compose_cfg) -> None:
    with pytest.raises(UserError, match=r"data\.root is required"):
        build_datamodule(compose_cfg("prepare").data)
    with pytest.raises(UserError, match=r"data\.resize=.squash. must be one of"):
        build_datamodule(compose_cfg("train", ["data=image_folder", "data.root=x", "data.resize=squash"]).data)
    missing = run_cli("prepare", f"data.root={tmp_path / 'nowhere'}", log_dir=tmp_path, check=False)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr and "Traceback" not in missing.stderr
    photos = class_folder(tmp_path / "imgs", per_class=1)
    (photos / "red" / "broken.png").write_bytes(b"\x89PNG broken")
    failed = run_cli(
        "prepare", f"data.root={photos}", "data.on_bad_file=fail", f"paths.data_dir={tmp_path}", log_dir=tmp_path,
        check=False,
    )  # fmt: skip
    assert failed.returncode == 2 and "red/broken.png" in failed.stderr.strip().splitlines()[-1]
