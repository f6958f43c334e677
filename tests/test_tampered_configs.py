"""A bundle or a checkpoint cannot run code: a network config edited to hold a nested Hydra node (here
`builtins.open(victim, "w")`, which would truncate a file) is refused in one line by every loader, even
when the bundle's manifest is rewritten to match, and the payload never runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from project import Predictor
from project.config import UserError
from project.deploy.bundle import MANIFEST, sha256
from project.models.classifier import ClassifierModule
from project.models.from_config import build_optim
from project.safe_build import build_partial, build_plain
from tests.conftest import read_metrics, run_cli

CONTENT = "precious data\n"
NET = {"_target_": "project.models.nets.DigitsCNN", "in_channels": 1, "num_classes": 10, "width": 8}


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """The file the payload would truncate; the tests assert it still holds CONTENT."""
    path = tmp_path / "victim.txt"
    path.write_text(CONTENT)
    return path


def payload(victim: Path) -> dict:
    return {"_target_": "builtins.open", "_args_": [str(victim), "w"]}


@pytest.fixture
def tampered_bundle(digits_bundle: Path, victim: Path, tmp_path: Path) -> Path:
    """A copy of the shared bundle whose model.json carries the payload, manifest rewritten to match."""
    bundle = shutil.copytree(digits_bundle, tmp_path / "deploy")
    model = json.loads((bundle / "model.json").read_text())
    model["net"]["width"] = payload(victim)
    (bundle / "model.json").write_text(json.dumps(model))
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"]["model.json"] = sha256(bundle / "model.json")
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    return bundle


@pytest.fixture
def tampered_checkpoint(trained_default: Path, victim: Path, tmp_path: Path) -> Path:
    """A copy of the shared run's best checkpoint whose hyper_parameters.net carries the payload."""
    checkpoint = torch.load(read_metrics(trained_default)["best_checkpoint"], map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["net"]["width"] = payload(victim)
    path = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, path)
    return path


def assert_refused_in_one_line(proc, victim: Path) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "net.width._target_" in lines[0] and "not allowed" in lines[0]
    assert victim.read_text() == CONTENT  # the payload never ran


def test_predictor_refuses_a_tampered_bundle(tampered_bundle: Path, victim: Path) -> None:
    with pytest.raises(UserError, match=r"model\.json net\.width\._target_"):
        Predictor.load(tampered_bundle)
    assert victim.read_text() == CONTENT


def test_serve_refuses_a_tampered_bundle(tampered_bundle: Path, victim: Path, tmp_path: Path) -> None:
    proc = run_cli("serve", f"bundle={tampered_bundle}", log_dir=tmp_path / "logs", check=False, timeout=90)
    assert_refused_in_one_line(proc, victim)


def test_loading_a_tampered_checkpoint_refuses(tampered_checkpoint: Path, victim: Path) -> None:
    with pytest.raises(UserError, match=r"net\.width\._target_"):
        ClassifierModule.load_from_checkpoint(tampered_checkpoint, map_location="cpu", weights_only=True)
    assert victim.read_text() == CONTENT


@pytest.mark.parametrize("command", ["eval", "benchmark"])
def test_commands_refuse_a_tampered_checkpoint(
    command: str, tampered_checkpoint: Path, victim: Path, tmp_path: Path
) -> None:
    args = (f"ckpt_path={tampered_checkpoint}", "data=digits", "extras.print_config=false")
    proc = run_cli(command, *args, log_dir=tmp_path / "logs", check=False, timeout=120)
    assert_refused_in_one_line(proc, victim)
    assert str(tampered_checkpoint) in proc.stderr  # the line names the file


def test_a_tampered_optimizer_is_never_built(tampered_checkpoint: Path, victim: Path) -> None:
    """A checkpoint's optimizer mapping is not built on load; built for a fit, it is checked the same way."""
    checkpoint = torch.load(tampered_checkpoint, weights_only=True)
    hparams = {**checkpoint["hyper_parameters"], "net": NET}
    hparams["optimizer"] = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": payload(victim)}
    model = ClassifierModule(**hparams)  # as load_from_checkpoint builds it: nothing from the optimizer runs
    with pytest.raises(UserError, match=r"model\.optimizer\.lr\._target_"):
        model.configure_optimizers()
    assert victim.read_text() == CONTENT


# safe_build itself


def test_build_plain_builds_an_allowed_class() -> None:
    net = build_plain(NET, ("project.models.",), nn.Module, "model.net")
    assert type(net).__name__ == "DigitsCNN"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": {"_target_": "builtins.open", "_args_": ["x", "w"]}}, r"x\.width\._target_: nested"),
        ({"width": [1, {"_partial_": True}]}, r"x\.width\[1\]\._partial_: nested"),
        ({"_args_": ["a"]}, r"'_args_' is not allowed"),
        ({"_partial_": True}, r"'_partial_' is not allowed"),
        ({"_target_": "builtins.open"}, r"only names under project\.models\."),
        ({"_target_": "torch.nn.Linear"}, r"only names under project\.models\."),
        ({"_target_": "project.models.nets.DoesNotExist"}, r"no such name"),
        ({"_target_": "project.models.classifier.plain"}, r"only names under"),  # defined in project.config
        ({"_target_": "project.models.hf_backbone.torch"}, r"only names under"),  # a module, imported there
        ({"_target_": "project.models.nets.DigitsCNN", "width": object()}, r"object is not plain data"),
    ],
)
def test_build_plain_refuses(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_plain({**NET, **change}, ("project.models.",), nn.Module, "x")


def test_build_plain_takes_a_composed_config_and_still_checks_it() -> None:
    """A composed (OmegaConf) net config with a list value builds; a nested payload in one is refused."""
    from omegaconf import OmegaConf

    config = OmegaConf.create({"_target_": "project.models.cifar_nets.CifarFast", "widths": [8, 16, 16]})
    assert type(build_plain(config, ("project.models.",), nn.Module, "x")).__name__ == "CifarFast"
    tampered = OmegaConf.create({**NET, "width": {"_target_": "builtins.open", "_args_": ["x", "w"]}})
    with pytest.raises(UserError, match="nested"):
        build_plain(tampered, ("project.models.",), nn.Module, "x")


def test_build_plain_refuses_a_class_of_the_wrong_kind() -> None:
    with pytest.raises(UserError, match="not a Module class"):
        build_plain({"_target_": "torch.optim.SGD", "lr": 0.1}, ("torch.optim.",), nn.Module, "x")


def test_build_partial_builds_a_checked_factory(victim: Path) -> None:
    make = build_optim({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.25}, "model.optimizer")
    assert make(params=[nn.Parameter(torch.zeros(1))]).defaults["lr"] == 0.25
    refused = [
        {"_target_": "torch.optim.SGD", "lr": 0.25},  # not a partial
        {"_target_": "torch.optim.SGD", "_partial_": True, "lr": payload(victim)},
        {"_target_": "builtins.open", "_partial_": True, "_args_": [str(victim), "w"]},
        {"_target_": "shutil.copy", "_partial_": True, "src": str(victim), "dst": str(victim) + ".copy"},
    ]
    for spec in refused:
        with pytest.raises(UserError):
            build_partial(spec, ("torch.optim.", "project.models."), "model.optimizer")
    assert victim.read_text() == CONTENT and not Path(str(victim) + ".copy").exists()
