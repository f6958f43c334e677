"""Imbalance and per-class reporting: class-weighted loss, per-class accuracy, macro-F1 and the confusion
matrix in metrics.json, against scikit-learn's definitions and through a real (short) training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score
from sklearn.utils.class_weight import compute_class_weight

from project import run
from project.config import UserError
from project.models.class_report import balanced_class_weights, class_report
from project.models.classifier import ClassifierModule

FAST = ["debug=limit", "extras.print_config=false", "callbacks.deploy=null", "model=digits_tiny", "logger=csv"]


def test_class_report_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 5, 300))  # class 4: predicted, never true
    cm = torch.as_tensor(confusion_matrix(y_true, y_pred, labels=range(5)))
    report = class_report(cm, ["a", "b", "c", "d", "e"])
    present = list(range(4))
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=present, average="macro"))
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    for i, name in enumerate("abcd"):
        row = report["per_class"][name]
        assert row["accuracy"] == pytest.approx(np.mean(y_pred[y_true == i] == i))
        assert row["support"] == int((y_true == i).sum())
    assert report["per_class"]["e"]["support"] == 0 and report["confusion_matrix"] == cm.tolist()
    json.dumps(report)  # plain data, ready for metrics.json


def test_balanced_weights_match_scikit_learn() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [2] * 40)
    counts = np.bincount(labels).tolist()
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    torch.testing.assert_close(balanced_class_weights(counts), torch.tensor(expected, dtype=torch.float32))
    assert balanced_class_weights([5, 0, 5]).tolist()[1] == 0.0  # an absent class never enters the loss


def test_weighted_training_writes_the_test_report(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("train", [*FAST, "model.class_weights=balanced"])
    result = run.train(cfg)
    model = result["trainer"].lightning_module
    counts = torch.tensor(result["trainer"].datamodule.class_counts(), dtype=torch.float32)
    torch.testing.assert_close(model.class_weight.cpu(), counts.sum() / (10 * counts))
    run.report(result, tmp_path)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    report = summary["test_report"]
    cm = torch.tensor(report["confusion_matrix"])
    assert cm.shape == (10, 10) and int(cm.sum()) == 360  # the whole test split, once
    assert summary["metrics"]["test/acc"] == pytest.approx(float(cm.trace() / cm.sum()), abs=1e-6)
    assert summary["metrics"]["test/f1_macro"] == pytest.approx(report["macro_f1"], abs=1e-6)
    assert summary["metrics"]["test/acc_class/3"] == pytest.approx(report["per_class"]["3"]["accuracy"], abs=1e-6)
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "test/acc_balanced" in header and "test/acc_class/9" in header


def test_bad_class_weights_are_one_line_errors(compose_cfg) -> None:
    with pytest.raises(UserError, match="class_weights"):
        ClassifierModule(net={"_target_": "torch.nn.Flatten"}, class_weights="inverse")
    cfg = compose_cfg("train", [*FAST, "model.class_weights=[1.0,2.0]"])
    with pytest.raises(UserError, match="2 values for 10 classes"):
        run.train(cfg)
    with pytest.raises(UserError, match="freeze_epochs"):
        ClassifierModule(net={"_target_": "torch.nn.Flatten"}, freeze_epochs=1)
