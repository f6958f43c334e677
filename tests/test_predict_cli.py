"""`python -m project.predict`: correct JSON lines after a real training run, bad inputs recorded per
line without stopping the rest, exit codes, and the input forms it accepts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from project.config import UserError
from project.data.scan import scan_csv, scan_folder
from project.deploy.backends.eager import EagerBackend
from project.deploy.bundle import BundleError, write_bundle
from project.deploy.checkpoint import load_net
from project.inputs import list_inputs
from project.predict import predict
from tests.conftest import read_metrics, run_cli
from tests.inference_helpers import bomb_png, digit_samples, save_pngs

# the shared fixtures (digits_model, digits_bundle): registered once, so session scope holds across files


def deploy_folder(run: Path, tmp_path: Path) -> Path:
    """`<run>/deploy` as the post-fit step writes it; until that step exists, the same bundle built here
    from the run's best checkpoint."""
    if (run / "deploy" / "manifest.json").is_file():
        return run / "deploy"
    net, net_config, input_spec = load_net(read_metrics(run)["best_checkpoint"])
    eager = EagerBackend()
    return write_bundle(
        tmp_path / "deploy", net, net_config, input_spec, [(eager, eager.build(net, torch.empty(0), 0))]
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_predict_after_train_prints_correct_json(trained_default: Path, digits_model, tmp_path: Path) -> None:
    images, labels = digit_samples(digits_model[1], 30)  # the same seeded test split the run held out
    save_pngs(tmp_path / "imgs", images, labels)
    bundle = deploy_folder(trained_default, tmp_path)
    proc = run_cli("predict", f"bundle={bundle}", f"inputs={tmp_path}/imgs/*.png", "topk=3", log_dir=tmp_path / "logs")
    lines = json_lines(proc.stdout)
    assert [Path(line["input"]).name for line in lines] == sorted(p.name for p in (tmp_path / "imgs").iterdir())
    correct = 0
    for line in lines:
        assert set(line) == {"input", "label", "index", "score", "topk"}
        assert len(line["topk"]) == 3 and line["topk"][0]["label"] == line["label"]
        correct += line["label"] == line["input"].rsplit("label", 1)[1].removesuffix(".png")
    assert correct >= 27, f"{correct}/30 correct"
    assert "predicted 30 input(s), 0 failed" in proc.stderr and "images/s" in proc.stderr
    assert not (tmp_path / "logs").exists()  # quiet: no run folder, and no summary.json without output=
    asked = run_cli(
        "predict", f"bundle={bundle}", f"inputs={tmp_path}/imgs", "topk=3", "hydra=default", log_dir=tmp_path / "logs"
    )
    summaries = list((tmp_path / "logs").rglob("summary.json"))  # a run folder when asked for, summary in it
    assert len(summaries) == 1 and json.loads(summaries[0].read_text())["count"] == 30
    assert json_lines(asked.stdout) == lines


def make_mixed_folder(folder: Path, digits_model) -> list[str]:
    """Three good digits and every kind of bad file; returns the expected per-line outcome, in order."""
    images, labels = digit_samples(digits_model[1], 3)
    save_pngs(folder, images, labels)  # 000_…, 001_…, 002_…
    (folder / "003_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "004_empty.png").write_bytes(b"")
    (folder / "005_notes.txt").write_text("hello")
    (folder / "006_bomb.png").write_bytes(bomb_png())
    truncated = (folder / f"000_label{labels[0]}.png").read_bytes()
    (folder / "007_truncated.png").write_bytes(truncated[: len(truncated) // 2])
    return ["ok", "ok", "ok", "corrupt", "empty file", "not a recognised image", "too large", "truncated"]


def test_bad_inputs_are_recorded_and_the_rest_predicted(digits_bundle: Path, digits_model, tmp_path: Path) -> None:
    expected = make_mixed_folder(tmp_path / "mixed", digits_model)
    output = tmp_path / "out" / "preds.jsonl"
    # named in a list file, each is used as given, so the .txt is read and reported (a glob lists images only)
    names = sorted(p.name for p in (tmp_path / "mixed").iterdir())
    (tmp_path / "mixed.txt").write_text("".join(f"mixed/{name}\n" for name in names))
    proc = run_cli(
        "predict",
        f"bundle={digits_bundle}",
        f"inputs={tmp_path}/mixed.txt",
        f"output={output}",
        log_dir=tmp_path / "logs",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # some inputs failed: non-zero, but only at the end
    assert proc.stdout.strip() == ""  # the lines went to the file
    lines = json_lines(output.read_text())
    assert len(lines) == len(expected)
    for line, outcome in zip(lines, expected, strict=True):
        if outcome == "ok":
            assert "label" in line and "error" not in line, line
        else:
            assert set(line) == {"input", "error"} and outcome in line["error"], line
    assert "predicted 8 input(s), 5 failed" in proc.stderr
    summary = json.loads((output.parent / "summary.json").read_text())  # beside output=, no run folder
    assert (summary["count"], summary["failed"], summary["runner"]) == (8, 5, "local")
    assert not (tmp_path / "logs").exists()


def test_fail_on_error_false_exits_zero(digits_bundle: Path, digits_model, tmp_path: Path) -> None:
    make_mixed_folder(tmp_path / "mixed", digits_model)
    proc = run_cli(
        "predict", f"bundle={digits_bundle}", f"inputs={tmp_path}/mixed", "fail_on_error=false", log_dir=tmp_path
    )
    lines = json_lines(proc.stdout)  # a folder: its image files only, so the .txt is not among them
    assert len(lines) == 7 and sum("error" in line for line in lines) == 4


def test_missing_bundle_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    proc = run_cli("predict", f"bundle={tmp_path}/nope", f"inputs={tmp_path}/a.png", log_dir=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: bundle not found:")


def test_tampered_bundle_is_refused(compose_cfg, digits_bundle: Path, digits_model, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(digits_bundle, tmp_path / "deploy"))
    (bundle / "model.json").write_text((bundle / "model.json").read_text().replace("16", "32"))
    save_pngs(tmp_path / "imgs", *digit_samples(digits_model[1], 1))
    cfg = compose_cfg("predict", [f"bundle={bundle}", f"inputs={tmp_path}/imgs"])
    with pytest.raises(BundleError, match=r"model\.json"):
        predict(cfg)


def test_in_process_predict_writes_a_summary(compose_cfg, digits_bundle: Path, digits_model, tmp_path: Path) -> None:
    paths = save_pngs(tmp_path / "imgs", *digit_samples(digits_model[1], 5))
    output = tmp_path / "preds.jsonl"
    cfg = compose_cfg(
        "predict",
        [f"bundle={digits_bundle}", f"inputs=[{paths[0]},{paths[1]},{tmp_path}/gone.png]", f"output={output}"],
    )
    summary = predict(cfg)
    assert summary["count"] == 3 and summary["failed"] == 1 and summary["backend"]
    assert json_lines(output.read_text())[2] == {"input": f"{tmp_path}/gone.png", "error": "file not found"}


def test_list_inputs(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "e.png").write_bytes(b"x")
    # folders recurse by default (a test set in class folders), hidden folders left out
    assert list_inputs(str(tmp_path)) == [f"{tmp_path}/a.JPG", f"{tmp_path}/b.png", f"{tmp_path}/sub/d.png"]
    assert list_inputs(str(tmp_path), recursive=False) == [f"{tmp_path}/a.JPG", f"{tmp_path}/b.png"]
    # a CSV: its path column, relative to the CSV's folder
    (tmp_path / "list.csv").write_text("label,path\ncat,sub/d.png\ndog,/abs/x.png\n")
    assert list_inputs(str(tmp_path / "list.csv")) == [f"{tmp_path}/sub/d.png", "/abs/x.png"]
    assert list_inputs(f"{tmp_path}/**/*.png") == [f"{tmp_path}/b.png", f"{tmp_path}/sub/d.png"]
    assert list_inputs([f"{tmp_path}/c.txt", f"{tmp_path}/missing.png"])[1].endswith("missing.png")
    for bad in (None, "", [], f"{tmp_path}/*.gif", f"{tmp_path}/missing.png", str(tmp_path / "sub" / "none")):
        with pytest.raises(UserError):
            list_inputs(bad)


def test_training_and_predict_list_alike(compose_cfg, digits_bundle: Path, digits_model, tmp_path: Path) -> None:
    """One lister (project.inputs): hidden files and folders, odd-case suffixes and non-images are treated
    alike by training's scan, `predict inputs=FOLDER` (the list the Ray runner is handed too) and a glob."""
    root = tmp_path / "photos"
    images = save_pngs(root / "three", *digit_samples(digits_model[1], 2))
    (root / "seven").mkdir()
    shutil.copy(images[0], root / "seven" / "x.PNG")
    shutil.copy(images[0], root / "seven" / "y.JpG")
    (root / "seven" / "notes.txt").write_text("not an image")
    (root / "seven" / "raw").write_bytes(b"no suffix")
    (root / "seven" / ".DS_Store").write_bytes(b"\0")
    (root / "three" / ".git").mkdir()
    shutil.copy(images[0], root / "three" / ".git" / "hidden.png")
    shutil.copy(images[0], root / "three" / "._resource.png")

    training = sorted(e.path for e in scan_folder(root).entries)
    assert len(training) == 4 and not any("/." in p or p.endswith((".txt", "raw")) for p in training)
    output = tmp_path / "preds.jsonl"
    predict(compose_cfg("predict", [f"bundle={digits_bundle}", f"inputs={root}", f"output={output}"]))
    assert sorted(line["input"] for line in json_lines(output.read_text())) == training
    assert list_inputs(f"{root}/**/*") == training
    # a CSV: the same header rule (any case, spaces around names) for training and predict
    (tmp_path / "labels.csv").write_text(" Path , Label \n" + "".join(f"{p},x\n" for p in training))
    assert [e.path for e in scan_csv(tmp_path / "labels.csv").entries] == list_inputs(str(tmp_path / "labels.csv"))


def test_the_summary_reports_the_engine_asked_for(pipeline_bundle: Path, digits_model, tmp_path: Path) -> None:
    images, labels = digit_samples(digits_model[1], 6)
    save_pngs(tmp_path / "imgs", images, labels)
    for backend in ("eager", "onnxruntime"):  # eager: the bundle's weights, though onnxruntime was chosen
        out = tmp_path / backend / "preds.jsonl"
        run_cli(
            "predict", f"bundle={pipeline_bundle}", f"inputs={tmp_path}/imgs", f"backend={backend}", f"output={out}",
            log_dir=tmp_path / "logs",
        )  # fmt: skip
        summary = json.loads((out.parent / "summary.json").read_text())
        assert summary["backend"] == backend and summary["count"] == 6 and summary["failed"] == 0
    proc = run_cli(
        "predict", f"bundle={pipeline_bundle}", f"inputs={tmp_path}/imgs", "backend=openvino",
        log_dir=tmp_path / "logs", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: bundle has no engine 'openvino'; it has onnxruntime, eager"


def test_a_batch_size_above_the_verified_range_is_refused(pipeline_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    proc = run_cli(
        "predict", f"bundle={pipeline_bundle}", f"inputs={tmp_path}/a.png", "batch_size=9", log_dir=tmp_path,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: batch_size=9 is above the largest batch")
