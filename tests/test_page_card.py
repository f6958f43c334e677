"""The model card the serving page shows (`GET /card`), read from a bundle without a browser."""

from __future__ import annotations

import json
from pathlib import Path

from project.deploy.bundle import Bundle
from project.inference.page import PICTURES, model_card


def test_card_says_which_pictures_the_bundle_lacks(pipeline_bundle: Path) -> None:
    """Without a plot or a data card in the run folder the bundle ships no pictures, and the card says so."""
    card = model_card(Bundle.open(pipeline_bundle), "onnxruntime", 1, 5)
    assert card["pictures"] == [] and card["missing_pictures"] == list(PICTURES)
    report = json.loads((pipeline_bundle / "benchmark.json").read_text())["backends"]["onnxruntime"]
    assert card["precision"] == report["precision"] and card["test_accuracy"] == report["parity"]["acc"]
    assert card["parity"]["passed"] is True and card["latency_ms"]["batch_size"] == 1
