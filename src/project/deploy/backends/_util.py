"""Small helpers the exporting backends share."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch


def dense(x: torch.Tensor) -> torch.Tensor:
    """`x` with exactly the row-major strides its shape implies, size-1 dimensions included.

    `.contiguous()` is not enough: it ignores the stride of a size-1 dimension, so a 1-channel batch cut
    from a numpy array (strides (H*W, 1, W, 1), what the digits data path yields) passes through as it is.
    A graph compiled ahead of time is specialised to exact strides: AOTInductor with freezing then runs a
    oneDNN convolution that picks a channels_last output for such an input while the generated code reads
    it as contiguous, and the logits are silently wrong (issue 13 item 4)."""
    strides, step = [], 1
    for size in reversed(x.shape):
        strides.append(step)
        step *= max(int(size), 1)
    if x.stride() == tuple(reversed(strides)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def export_example(example: torch.Tensor) -> torch.Tensor:
    """A batch of at least two images with dense strides: `torch.export` specialises a dimension it sees
    as 0 or 1, so a batch-1 example would freeze the batch size into the exported graph."""
    if example.shape[0] >= 2:
        return dense(example[:2])
    return dense(example.expand(2, *example.shape[1:]))


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
