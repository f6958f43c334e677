"""Every backend that runs here passes parity on every shipped network config (conf/model/*), trained a few
steps so BatchNorm statistics are far from their initial values, through the real post-fit pipeline
(build → save → load → parity). The digits configs read the real digits test split, whose 1-channel
batches carry the strides the data path produces (see `dense` in project.deploy.backends._util).

AOTInductor compiles cost ~15-60 s per network on 2 cores: digits_cnn and cifar_fast run in the default
suite, the other configs are marked slow (same code paths, other layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from project.config import config_dir
from project.data.digits import DigitsDataModule
from project.deploy.checkpoint import build_net
from project.deploy.parity import ParityData, parity_from_loader
from project.deploy.pipeline import run_pipeline
from project.deploy.settings import DeploySettings
from project.deploy.synthetic import prototype_images, synthetic_parity_data

# every backend kind the CPU can run; unavailable ones (bf16 on a CPU without it, TensorRT) are reported
# by the pipeline and skipped here, exactly as in a real run
BACKENDS = ["eager", "eager_channels_last", "onnxruntime", "openvino", "openvino_bf16", "inductor"]
STEPS = 8


def model_net(option: str) -> nn.Module:
    """The network a run with `model=<option>` trains, built from the shipped config."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={option}"])
    return build_net(cfg.model.net)


def train_steps(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = STEPS) -> nn.Module:
    """A few optimiser steps in train mode: weights move and BatchNorm running stats leave (0, 1)."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(images), (32,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def digits_case(option: str) -> tuple[nn.Module, ParityData, list[int]]:
    data = DigitsDataModule(val_size=180)
    data.setup()
    images, labels = data.splits["train"]
    net = train_steps(model_net(option), data.preprocess(images), labels, steps=40)
    parity = parity_from_loader(data.test_dataloader(), data.preprocess, None, "digits test split")
    return net, parity, [1, 8, 8]


def synthetic_case(option: str, shape: tuple[int, int, int]) -> tuple[nn.Module, ParityData, list[int]]:
    images, labels = prototype_images(shape, 10, 256, seed=0, sample_seed=5)
    net = train_steps(model_net(option), images, labels)
    # the head refitted on the trained features: decisions with real margins (see project.deploy.synthetic)
    return net, synthetic_parity_data(net, shape, 10, count=256), list(shape)


CASES = {
    "digits_cnn": lambda: digits_case("digits_cnn"),
    "digits_tiny": lambda: digits_case("digits_tiny"),
    "cifar_fast": lambda: synthetic_case("cifar_fast", (3, 32, 32)),
    "resnet18": lambda: synthetic_case("resnet18", (3, 32, 32)),
}


@pytest.mark.parametrize(
    "option",
    [
        "digits_cnn",
        "cifar_fast",
        pytest.param("digits_tiny", marks=pytest.mark.slow),
        pytest.param("resnet18", marks=pytest.mark.slow),
    ],
)
def test_every_backend_passes_parity_on_every_shipped_model(option: str, tmp_path: Path) -> None:
    net, data, shape = CASES[option]()
    assert any(m.running_var.sub(1).abs().max() > 0.05 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    settings = DeploySettings.from_config(
        {
            "backends": BACKENDS,
            "batch_sizes": [1, 64],  # a partial last batch too
            "timing": {"warmup_iters": 1, "min_iters": 1, "min_duration_s": 0.0},
            "bundle": False,
            "plot": False,
            "device": "cpu",
            "strict": True,
        }
    )
    spec = {"channels": shape[0], "height": shape[1], "width": shape[2]}
    report = run_pipeline(net, {"_target_": option}, spec, settings, tmp_path, data=data)
    ran = {name: r for name, r in report.engines.items() if r.status != "unavailable"}
    reasons = {name: r.reason for name, r in report.engines.items()}
    assert {"eager", "onnxruntime", "openvino", "inductor"} <= set(ran), reasons
    failed = {name: r.reason for name, r in ran.items() if r.status != "ok"}
    assert not failed, f"{option}: {failed}"
    assert report.engines["eager"].parity.reference_acc > 0.5  # the trained net decides something
