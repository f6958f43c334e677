"""OpenVINO INT8 through NNCF post-training quantization, as NNCF documents it for OpenVINO models:
`nncf.quantize(model, nncf.Dataset(...))` with the default (performance) preset, or, when an accuracy
budget is given, `nncf.quantize_with_accuracy_control`, which measures top-1 accuracy on the VALIDATION
split and returns the most sensitive layers to floating point until the drop is within `max_drop`.

Input: an `openvino.Model` in fp32 (as `openvino.convert_model` returns it); output: the quantized
`openvino.Model` (FakeQuantize nodes), which the CPU plugin compiles into integer kernels."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from project.deploy.hardware import cpu_has_vnni
from project.deploy.quantize.calibration import CalibrationSet

PRESETS = ("performance", "mixed")


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs a line per step at INFO and draws progress bars on stdout: keep both out of the post-fit
    output (warnings and errors still show)."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def top1_accuracy(compiled: Any, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """The `validation_fn` NNCF calls on each candidate model: top-1 accuracy (0..1) over labelled batches."""
    correct = total = 0
    for images, labels in items:
        logits = compiled(images)[0]
        correct += int((np.asarray(logits).argmax(1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def advanced_parameters() -> Any:
    """Without VNNI, x86 int8 kernels sum u8×s8 products in saturating 16-bit lanes (vpmaddubsw): NNCF's
    overflow fix (7-bit weights) is then needed in every layer, not only the first (its default)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    fix = OverflowFix.FIRST_LAYER if cpu_has_vnni() else OverflowFix.ENABLE
    return AdvancedQuantizationParameters(overflow_fix=fix)


def quantize_openvino(
    model: Any,
    calibration: CalibrationSet,
    validation: CalibrationSet | None = None,
    max_drop: float | None = None,
    preset: str = "performance",
    batch_size: int = 1,
) -> Any:
    """fp32 `openvino.Model` → INT8 `openvino.Model`. `max_drop` (accuracy points, e.g. 1.0) turns on
    accuracy control on `validation` (labelled); None is plain post-training quantization."""
    import nncf

    if preset not in PRESETS:
        raise ValueError(f"unknown NNCF preset {preset!r}: expected one of {PRESETS}")
    chosen_preset = nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    # NNCF counts `subset_size` in dataset items; one image per item, as its examples do, so every image
    # calibrates (the batch axis of the converted model is dynamic)
    items = [b.numpy() for b in calibration.batches(batch_size)]
    calibration_dataset = nncf.Dataset(items)
    advanced = advanced_parameters()
    with quiet_nncf():
        if max_drop is None:
            return nncf.quantize(
                model, calibration_dataset, preset=chosen_preset, subset_size=len(items), advanced_parameters=advanced
            )
        if validation is None or validation.labels is None:
            raise ValueError("accuracy control (deploy.int8.max_drop) needs labelled validation images")
        labelled = [(x.numpy(), y.numpy()) for x, y in validation.labelled_batches(64)]
        validation_dataset = nncf.Dataset(labelled, lambda item: item[0])
        return nncf.quantize_with_accuracy_control(
            model,
            calibration_dataset,
            validation_dataset,
            validation_fn=top1_accuracy,
            max_drop=float(max_drop) / 100.0,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=chosen_preset,
            subset_size=len(items),
            advanced_quantization_parameters=advanced,
        )
