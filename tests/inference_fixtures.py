"""Session fixtures of the inference tests (registered in tests/conftest.py via `pytest_plugins`):
one registration however many modules ask, so each fixture really is built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from project.data.digits import DigitsDataModule
from tests.inference_helpers import build_bundle, build_pipeline_bundle, train_digits


@pytest.fixture(scope="session")
def digits_model() -> tuple[nn.Module, DigitsDataModule]:
    return train_digits()


@pytest.fixture(scope="session")
def digits_bundle(digits_model: tuple[nn.Module, DigitsDataModule], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified bundle of the trained net; treat it as read-only (copy it to tamper with it)."""
    net, data = digits_model
    return build_bundle(tmp_path_factory.mktemp("bundle") / "deploy", net, data)


@pytest.fixture(scope="session")
def pipeline_bundle(digits_model: tuple[nn.Module, DigitsDataModule], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle as the post-fit step writes it (real ONNX Runtime engine, parity on the digits test split,
    batch sizes [1, 8]): `onnxruntime` chosen, so eager fp32 is no engine record, only the weights file."""
    net, data = digits_model
    return build_pipeline_bundle(tmp_path_factory.mktemp("pipeline_bundle"), net, data)
