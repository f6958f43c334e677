"""What the hardware can do, defined once: the engine contract, the precision tables, whether a device
computes a precision natively, and the machine facts a benchmark is measured on."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import torch

# An engine: normalised float32 N×C×H×W batch (CPU tensor) → float32 logits (CPU tensor).
Engine = Callable[[torch.Tensor], torch.Tensor]

# The floating-point precisions an engine may compute in, and the torch dtype of each.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOAT_PRECISIONS: tuple[str, ...] = tuple(DTYPES)
# Quantized precisions: weights and activations in 8 bits, calibrated on training images (deploy/quantize).
QUANTIZED_PRECISIONS: tuple[str, ...] = ("int8", "fp8")
# Every precision a backend name may carry (`kind_<precision>`); each backend declares which it builds.
PRECISIONS: tuple[str, ...] = FLOAT_PRECISIONS + QUANTIZED_PRECISIONS
# Higher first: on an accuracy tie between engines of about the same speed, the higher precision ships.
PRECISION_RANK: dict[str, int] = {"fp32": 4, "bf16": 3, "fp16": 3, "fp8": 1, "int8": 1}


def cpu_has_native_bf16() -> bool:
    """AVX-512-BF16 or AMX: without them bf16 is emulated on the CPU, slower than fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


# x86 flags for an int8 dot product that sums u8×s8 products in 32 bits (AVX512-VNNI, AVX-VNNI, AMX-INT8)
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU (`/proc/cpuinfo`'s text, read when not given) has a VNNI-class int8 instruction.
    Without one, int8 kernels sum u8×s8 products in saturating 16-bit lanes (vpmaddubsw): every int8
    quantizer here then keeps activations or weights to 7 bits."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False  # unknown: the 7-bit choice is correct everywhere, only slightly less precise
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and VNNI_FLAGS & set(value.split()):
            return True
    return False


def cuda_has_native_bf16() -> bool:
    """Ampere (compute capability 8.0) or newer."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def native_precision_reason(device: str, precision: str) -> str | None:
    """None when `device` ("cpu" or "cuda") computes `precision` in hardware, else why not."""
    if precision == "fp32":
        return None
    if device == "cuda":
        if precision == "bf16" and not cuda_has_native_bf16():
            return "this GPU has no native bf16"
        return None
    if precision == "bf16" and not cpu_has_native_bf16():
        return "this CPU has neither AVX-512-BF16 nor AMX: bf16 would be emulated, slower than fp32"
    if precision == "fp16" and not torch.cpu._is_amx_fp16_supported():
        return "this CPU has no AMX-FP16: fp16 would be emulated"
    return None


def resolve_device(device: str) -> torch.device:
    """`auto` → cuda when there is one, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _cpu_model_and_cores() -> tuple[str, int | None]:
    """The CPU's model name and its physical cores (distinct socket/core pairs: hyper-threads share one)."""
    cpu, cores = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo_pairs = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in f if ":" in line)]
    except OSError:
        return cpu, None
    cpu = next((v for k, v in cpuinfo_pairs if k == "model name"), cpu)
    ids, socket = set(), "0"
    for key, value in cpuinfo_pairs:
        if key == "physical id":
            socket = value
        elif key == "core id":
            ids.add((socket, value))
    cores = len(ids) or None
    return cpu, cores


def machine_info(threads: int, device: torch.device, versions: dict[str, str]) -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpu, cores = _cpu_model_and_cores()
    info: dict[str, Any] = {
        "cpu": cpu,
        "physical_cores": cores,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "cpu_bf16": cpu_has_native_bf16(),
        "cpu_amx": bool(torch.cpu._is_amx_tile_supported()),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "versions": versions,
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
    return info
