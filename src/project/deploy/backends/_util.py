"""Small helpers the exporting backends share."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch


def export_example(example: torch.Tensor) -> torch.Tensor:
    """A batch of at least two images: `torch.export` specialises a dimension it sees as 0 or 1, so a
    batch-1 example would freeze the batch size into the exported graph."""
    if example.shape[0] >= 2:
        return example[:2].contiguous()
    return example.expand(2, *example.shape[1:]).contiguous()


def batch_dim() -> torch.export.Dim:
    """A dynamic batch dimension from 1 up: every batch size, including a partial last batch, runs."""
    return torch.export.Dim("batch", min=1)


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporters' chatter (progress lines, optional-dependency and deprecation warnings)."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
