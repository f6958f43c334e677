"""INT8 (and FP8 where the GPU has it) for Torch-TensorRT through NVIDIA ModelOpt, following the
Torch-TensorRT "Quantization (INT8 / FP8)" guide: `mtq.quantize(model, mtq.INT8_DEFAULT_CFG,
forward_loop=...)` inserts calibrated Q/DQ wrappers (per-channel weights, per-tensor activations), then
`torch_tensorrt.compile(ir="dynamo", enabled_precisions={torch.int8})` turns them into TensorRT int8
layers. Exported under ModelOpt's `export_torch_mode`, as the Torch-TensorRT PTQ example does.

Written from the documentation only: this project's CPU machines cannot run it (no CUDA, no
torch-tensorrt wheel for the CPU torch). Install with `pip install '.[tensorrt]' nvidia-modelopt`; the
tests that exercise it carry the `gpu` marker."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from typing import Any

import torch
from torch import nn

from project.deploy.quantize.calibration import CalibrationSet

# name → (ModelOpt config attribute, TensorRT precision, minimum compute capability)
FORMATS: dict[str, tuple[str, torch.dtype, tuple[int, int]]] = {
    "int8": ("INT8_DEFAULT_CFG", torch.int8, (6, 1)),
    "fp8": ("FP8_DEFAULT_CFG", torch.float8_e4m3fn, (8, 9)),  # Ada / Hopper and newer
}


def modelopt_unavailable_reason(precision: str) -> str | None:
    """None when `precision` (int8 or fp8) can be built on this machine, else why not."""
    if precision not in FORMATS:
        return f"unknown quantized precision {precision!r} (int8 or fp8)"
    if not torch.cuda.is_available():
        return "no CUDA device (TensorRT runs on NVIDIA GPUs only)"
    for module, package in (("torch_tensorrt", "torch-tensorrt"), ("modelopt", "nvidia-modelopt")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install '.[tensorrt]' nvidia-modelopt)"
    needed = FORMATS[precision][2]
    if torch.cuda.get_device_capability() < needed:
        gpu = torch.cuda.get_device_name()
        return f"{precision} needs compute capability {needed[0]}.{needed[1]}+ (this GPU: {gpu})"
    return None


def quantize_modelopt(
    net: nn.Module, calibration: CalibrationSet, precision: str = "int8", batch_size: int = 32
) -> Any:
    """A CUDA copy of `net` with ModelOpt Q/DQ wrappers calibrated on `calibration` (fp32 weights)."""
    import modelopt.torch.quantization as mtq

    model = copy.deepcopy(net).eval().to("cuda")

    def forward_loop(module: nn.Module) -> None:
        with torch.no_grad():
            for batch in calibration.batches(batch_size):
                module(batch.to("cuda"))

    return mtq.quantize(model, getattr(mtq, FORMATS[precision][0]), forward_loop=forward_loop)


def compile_quantized(model: Any, inputs: list[Any], precision: str = "int8", min_block_size: int = 1) -> Any:
    """The ModelOpt-quantized module → a Torch-TensorRT module with int8/fp8 layers over `inputs`
    (`torch_tensorrt.Input` specs, dynamic batch)."""
    import torch_tensorrt

    try:
        from modelopt.torch.quantization.utils import export_torch_mode
    except ImportError:  # older ModelOpt releases export without it
        export_torch_mode = contextlib.nullcontext
    with torch.no_grad(), export_torch_mode():
        return torch_tensorrt.compile(
            model,
            ir="dynamo",
            arg_inputs=inputs,
            enabled_precisions={FORMATS[precision][1]},
            min_block_size=min_block_size,
        )
