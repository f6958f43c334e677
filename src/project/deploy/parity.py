"""Parity: does an engine give the same answers as eager fp32 on real data?

Three figures, each against the eager fp32 logits of the same images: top-1 agreement, the largest
|logit difference|, and the change in test accuracy (points). Tolerances depend on the engine's precision:
fp32 engines only reorder floating-point sums, so they must match tightly; bf16/fp16 round every
activation, so logits move visibly and only the decisions (agreement, accuracy) are held tight.

An engine can be right at one batch size and wrong at another (a static-batch package, a TensorRT
profile, a kernel picked per shape), so it is also checked at every batch size a bundle may run (the timed
sizes): on `BATCH_SAMPLES` of the images at that size (tiled up to one full batch), agreement and logits
only, since an accuracy delta on a sample is noise. It passes only when every size passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from project.config import dataclass_from_mapping
from project.deploy.hardware import Engine
from project.deploy.results import ParityResult


@dataclass
class Tolerance:
    min_top1_agreement: float = 0.999
    max_acc_delta: float | None = 0.1  # accuracy points, either direction (None: not checked)
    atol: float | None = 1e-3  # logits: |engine - eager| <= atol + rtol * max|eager| (None: not checked)
    rtol: float | None = 1e-3
    max_acc_drop: float | None = None  # accuracy points lost (a gain is no failure); None: not checked

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Tolerance:
        return dataclass_from_mapping(cls, values, "parity tolerance")


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(),
    "bf16": Tolerance(min_top1_agreement=0.995, max_acc_delta=0.3, atol=0.05, rtol=0.1),
    "fp16": Tolerance(min_top1_agreement=0.995, max_acc_delta=0.3, atol=0.02, rtol=0.05),
    # 8-bit engines move every logit by a quantization step: only the decisions are gated, the accuracy
    # one-sided (deploy.parity.int8.max_acc_drop) and the agreement with eager fp32 at a floor
    "int8": Tolerance(min_top1_agreement=0.97, max_acc_delta=None, atol=None, rtol=None, max_acc_drop=1.0),
    "fp8": Tolerance(min_top1_agreement=0.97, max_acc_delta=None, atol=None, rtol=None, max_acc_drop=1.0),
}
# images checked at each batch size (at least one full batch): cheap next to the full check
BATCH_SAMPLES = 256
# `deploy.parity.<precision>` (e.g. `deploy.parity.int8.max_acc_drop=0.5`) sets these precisions' gates
GATED_PRECISIONS = ("int8", "fp8")


@dataclass
class ParityData:
    """Normalised float32 CPU batches (the engine's input), their labels, and where they came from."""

    batches: list[torch.Tensor]
    labels: torch.Tensor
    source: str

    @property
    def count(self) -> int:
        return int(self.labels.numel())

    def rebatch(self, batch_size: int) -> ParityData:
        """The same images in chunks of `batch_size`, so the last chunk is a partial batch, as in serving."""
        images = torch.cat(self.batches)
        return ParityData(list(images.split(batch_size)), self.labels, self.source)


def run_engine(engine: Engine, data: ParityData) -> torch.Tensor:
    return torch.cat([engine(x).float() for x in data.batches])


def compare(logits: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor, tol: Tolerance) -> ParityResult:
    """The parity figures of `logits` against `reference`, and whether they are within `tol`."""
    if logits.shape != reference.shape:
        return ParityResult(
            passed=False, reason=f"output shape {tuple(logits.shape)} != eager {tuple(reference.shape)}"
        )
    if not torch.isfinite(logits).all():
        return ParityResult(passed=False, reason="non-finite logits")
    diff = (logits - reference).abs()
    agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    ref_acc = (reference.argmax(1) == labels).float().mean().item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    bound = None if tol.atol is None else tol.atol + (tol.rtol or 0.0) * reference.abs().max().item()
    acc_delta, max_abs_diff = (acc - ref_acc) * 100.0, diff.max().item()
    failures = []
    if agreement < tol.min_top1_agreement:
        failures.append(f"top-1 agreement {agreement:.4f} < {tol.min_top1_agreement}")
    if tol.max_acc_delta is not None and abs(acc_delta) > tol.max_acc_delta:
        failures.append(f"accuracy delta {acc_delta:+.2f} pts beyond ±{tol.max_acc_delta}")
    if tol.max_acc_drop is not None and -acc_delta > tol.max_acc_drop:
        failures.append(f"accuracy drop {-acc_delta:.2f} pts > {tol.max_acc_drop}")
    if bound is not None and max_abs_diff > bound:
        failures.append(f"max |logit diff| {max_abs_diff:.3g} > {bound:.3g}")
    return ParityResult(
        passed=not failures,
        reason="; ".join(failures) or None,
        samples=int(labels.numel()),
        top1_agreement=agreement,
        max_abs_diff=max_abs_diff,
        mean_abs_diff=diff.mean().item(),
        logit_bound=bound,
        reference_acc=ref_acc,
        acc=acc,
        acc_delta=acc_delta,
        tolerance=vars(tol).copy(),
    )


def tolerance_for(precision: str, tolerances: Mapping[str, Tolerance]) -> Tolerance:
    return tolerances.get(precision) or tolerances.get("bf16") or DEFAULT_TOLERANCES["bf16"]


def check_parity(
    engine: Engine,
    data: ParityData,
    reference: torch.Tensor | None,
    precision: str,
    tolerances: Mapping[str, Tolerance] = DEFAULT_TOLERANCES,
    batch_sizes: Sequence[int] = (),
) -> tuple[ParityResult, torch.Tensor]:
    """Run `engine` over `data` and compare with the eager fp32 `reference` logits (None: this engine is
    the reference, compared with itself), then again at each of `batch_sizes` (`check_batch_sizes`).
    Returns the result and the engine's logits on `data`."""
    logits = run_engine(engine, data)
    reference = logits if reference is None else reference
    tol = tolerance_for(precision, tolerances)
    result = compare(logits, reference, data.labels, tol)
    result.data = data.source
    if batch_sizes:
        check_batch_sizes(result, engine, data, reference, tol, batch_sizes)
    return result, logits


def check_batch_sizes(
    result: ParityResult,
    engine: Engine,
    data: ParityData,
    reference: torch.Tensor,
    tol: Tolerance,
    batch_sizes: Sequence[int],
) -> None:
    """Fill `result.by_batch_size`: the engine at each size on a sample of the images, agreement and
    logits against `reference`; an engine that raises at a size fails there. Any failure fails `result`."""
    images = torch.cat(data.batches)
    decisions = replace(tol, max_acc_delta=None, max_acc_drop=None)  # a sample's accuracy is noise
    failed = []
    for bs in sorted(set(batch_sizes)):
        index = torch.arange(max(min(data.count, BATCH_SAMPLES), bs)) % data.count  # tiled: one full batch
        try:
            logits = torch.cat([engine(x).float() for x in images[index].split(bs)])
            checked = compare(logits, reference[index], data.labels[index], decisions)
        except Exception as exc:
            checked = ParityResult(passed=False, reason=f"{type(exc).__name__}: {exc}")
        result.by_batch_size[bs] = checked
        if not checked.passed:
            failed.append(f"at batch {bs}: {checked.reason}")
    if failed:
        result.passed = False
        result.reason = "; ".join([result.reason, *failed] if result.reason else failed)


def tolerances_from_config(values: Mapping[str, Any] | None) -> dict[str, Tolerance]:
    merged = dict(DEFAULT_TOLERANCES)
    for precision, tol in (values or {}).items():
        merged[precision] = Tolerance.from_mapping({**vars(DEFAULT_TOLERANCES.get(precision, Tolerance())), **tol})
    return merged


def parity_from_loader(
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None,
    max_samples: int | None,
    source: str,
) -> ParityData:
    """(images, labels) batches → float32 contiguous CPU inputs, `preprocess` applied to uint8 images."""
    images, labels, seen = [], [], 0
    for x, y in batches:
        if preprocess is not None and not torch.is_floating_point(x):
            x = preprocess(x)
        x = x.detach().to("cpu", torch.float32).contiguous()
        images.append(x)
        labels.append(y.detach().cpu().long())
        seen += len(x)
        if max_samples and seen >= max_samples:
            break
    if not images:
        raise ValueError(f"{source} yielded no batches")
    x, y = torch.cat(images), torch.cat(labels)
    if max_samples:
        x, y = x[:max_samples], y[:max_samples]
    return ParityData([x], y, source)
