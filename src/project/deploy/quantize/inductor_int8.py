"""PT2E INT8 for TorchInductor on x86 CPUs, as torchao documents it: `torch.export` → `prepare_pt2e` with
`X86InductorQuantizer` (static, per-channel weights) → calibrate → `convert_pt2e` → export again with a
dynamic batch → AOTInductor package compiled with freezing, in which Inductor's x86 quantization passes
(registered by torchao when the quantizer module is imported) fuse dequant→conv→quant into oneDNN int8
kernels.

PT2E quantization left `torch.ao` in torch 2.10+: on torch 2.13 it lives in `torchao.quantization.pt2e`
(`pip install torchao`); without torchao this backend reports itself unavailable."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from project.deploy.backends._util import batch_dim, export_example, quiet_export
from project.deploy.hardware import cpu_has_vnni
from project.deploy.quantize.calibration import CalibrationSet


def pt2e_unavailable_reason() -> str | None:
    """None when PT2E x86 quantization can run here, else why not."""
    if importlib.util.find_spec("torchao") is None:
        return "PT2E quantization moved out of torch.ao in torch 2.10+: it needs torchao (pip install torchao)"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn): Inductor has no x86 int8 kernels"
    return None


@contextlib.contextmanager
def quiet_torchao() -> Iterator[None]:
    """torchao's import logs failures to load its CUDA-only extensions and deprecation warnings on CPU."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def quantize_pt2e(net: nn.Module, calibration: CalibrationSet, batch_size: int = 32) -> nn.Module:
    """Eval-mode fp32 network → the converted (Q/DQ) graph module, calibrated on `calibration`."""
    with quiet_torchao():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = export_example(calibration.images[:2])
    with quiet_export():
        graph = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: batch_dim()},)).module()
    quantizer = xiq.X86InductorQuantizer()
    # without VNNI, oneDNN's u8×s8 products go through 16-bit sums (vpmaddubsw) that saturate: 7-bit
    # activations avoid that, as torchao's docs advise for such CPUs
    config = xiq.get_default_x86_inductor_quantization_config(reduce_range=not cpu_has_vnni())
    quantizer.set_global(config)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in calibration.batches(batch_size):
            prepared(batch)
    return convert_pt2e(prepared)


def compile_static_packages(
    converted: nn.Module, example: torch.Tensor, sizes: list[int], folder: Path
) -> dict[int, Path]:
    """One AOTInductor package per batch size, `model_b{size}.pt2`, each with a STATIC batch.

    Why static: on torch 2.13 + torchao 0.18 the int8 lowering gets dynamic batch wrong on the CPU.
    An AOTInductor package of the converted graph exported with a dynamic batch axis compiles, but its
    answers disagree with the converted graph (top-1 agreement ≈ 0.1 on a digits-sized net), and JIT
    `torch.compile(dynamic=True)` with freezing fails in Inductor's qconv lowering ("incorrect fake (meta)
    kernel"); the same graph with a static batch matches the converted graph."""
    with quiet_torchao():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401  registers the passes
    packages = {}
    for size in sorted({int(s) for s in sizes}):
        batch = example[:1].expand(size, *example.shape[1:]).contiguous()
        package = Path(folder) / f"model_b{size}.pt2"
        with torch.no_grad(), quiet_export(), quiet_torchao():
            exported = torch.export.export(converted, (batch,))
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(package), inductor_configs={"freezing": True}
            )
        packages[size] = package
    return packages


def package_sizes(folder: Path) -> dict[int, Path]:
    """The static-batch packages `compile_static_packages` wrote into `folder`, by batch size."""
    found = {int(p.stem.removeprefix("model_b")): p for p in Path(folder).glob("model_b*.pt2")}
    if not found:
        raise FileNotFoundError(f"no model_b<N>.pt2 packages in {folder}")
    return found


def batch_plan(count: int, sizes: list[int]) -> list[tuple[int, int]]:
    """How to run `count` images on static-batch packages: [(package size, images in that call)]. Full
    batches of the largest package that fits; a remainder is padded up to the next package when that at
    most doubles its work, else it goes on in smaller packages."""
    ordered, plan, rest = sorted(sizes), [], int(count)
    while rest > 0:
        fits = [s for s in ordered if s <= rest]
        above = [s for s in ordered if s >= rest]
        size = above[0] if above and (above[0] <= 2 * rest or not fits) else fits[-1]
        take = min(size, rest)
        plan.append((size, take))
        rest -= take
    return plan


class StaticBatchEngine:
    """PT2E int8 packages of fixed batch sizes behind the engine contract: any batch size runs, a batch
    that matches no package is split and/or zero-padded (`batch_plan`)."""

    def __init__(self, packages: dict[int, Path]) -> None:
        self.packages = {int(k): Path(v) for k, v in packages.items()}
        self.sizes = sorted(self.packages)
        self.runners = {size: torch._inductor.aoti_load_package(str(p)) for size, p in self.packages.items()}

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to("cpu", torch.float32).contiguous()
        if len(x) in self.runners:
            return self.runners[len(x)](x)
        outputs, start = [], 0
        for size, take in batch_plan(len(x), self.sizes):
            chunk = x[start : start + take]
            if take < size:
                chunk = torch.cat([chunk, chunk.new_zeros((size - take, *chunk.shape[1:]))])
            outputs.append(self.runners[size](chunk)[:take])
            start += take
        return torch.cat(outputs)
