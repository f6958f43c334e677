"""Transfer learning from a Hugging Face `transformers` backbone, all offline: a tiny backbone written with
`save_pretrained` into a temporary folder goes through the real CLI (train with a frozen-then-unfrozen
backbone → post-fit ONNX Runtime / OpenVINO / inductor with parity → bundle → predict), and the bundle
rebuilds the network without the backbone's folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from project import run
from project.deploy.bundle import Bundle
from project.deploy.checkpoint import build_net
from project.inference.preprocess import Preprocessor
from project.models.hf_backbone import HFBackbone
from project.models.hf_preprocessing import input_size
from tests.conftest import read_metrics, run_cli, run_folder
from tests.inference_helpers import save_pngs

QUICK = ["deploy.strict=true", "deploy.timing.min_duration_s=0.05", "deploy.timing.min_iters=3", "deploy.plot=false"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may touch the network (subprocesses inherit it)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def save_backbone(folder: Path, config, preprocessing: dict) -> Path:
    from transformers import AutoModel

    AutoModel.from_config(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessing))
    return folder


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~2k-parameter greyscale ResNet whose processor asks for 16×16 inputs (digits are upsampled)."""
    from transformers import ResNetConfig

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_channels=1)
    preprocessing = {"image_mean": [0.25], "image_std": [0.3], "size": {"height": 16, "width": 16}}
    return save_backbone(tmp_path_factory.mktemp("hf") / "tiny-resnet", config, preprocessing)


def tiny_configs() -> dict:
    from transformers import ConvNextConfig, ViTConfig

    return {
        "convnext": ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "vit": ViTConfig(
            image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
        ),
    }


def test_processor_sizes_and_statistics_reach_the_data_config(tiny_resnet: Path, compose_cfg) -> None:
    cfg = compose_cfg("train", ["model=hf_backbone", f"model.net.name={tiny_resnet}"])
    assert (cfg.data.image_size, cfg.data.mean, cfg.data.std) == (16, [0.25], [0.3])
    assert cfg.model.net._target_ == "project.models.hf_backbone.HFBackbone"
    assert input_size({"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}}) == 224
    assert input_size({"size": {"height": 384, "width": 512}}) == [384, 512]
    missing = compose_cfg("train", ["model=hf_backbone", f"model.net.name={tiny_resnet.parent / 'nope'}"])
    with pytest.raises(Exception, match="offline, pass a local folder"):
        _ = missing.data.mean


@pytest.mark.parametrize("kind", ["convnext", "vit"])
def test_backbone_rebuilds_from_its_recorded_config_and_exports(kind: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from project.deploy.backends.onnxruntime import export_onnx

    folder = save_backbone(tmp_path / kind, tiny_configs()[kind], {"size": {"height": 16, "width": 16}})
    net = HFBackbone(str(folder), num_classes=5).eval()
    record = json.loads(json.dumps(net.rebuild_config()))  # what checkpoints and bundles hold
    shutil.rmtree(folder)  # the rebuild must not need the original files
    rebuilt = build_net(record).eval()
    rebuilt.load_state_dict(net.state_dict())
    grey = torch.rand(3, 1, 16, 16)  # one channel, repeated to the backbone's three
    with torch.no_grad():
        expected = net(grey)
        torch.testing.assert_close(rebuilt(grey), expected)
    session = ort.InferenceSession(export_onnx(rebuilt, torch.rand(2, 3, 16, 16)))
    batch = torch.rand(5, 3, 16, 16)
    onnx_logits = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(onnx_logits), rebuilt(batch).detach(), atol=1e-4, rtol=1e-4)
    assert expected.shape == (3, 5)


class BackboneWatch(Callback):
    """Records backbone and head weights and the learning rates at the end of each training epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        net = pl_module.net
        self.epochs.append(
            {
                "backbone": torch.cat([p.detach().flatten() for p in net.backbone.parameters()]).clone(),
                "head": torch.cat([p.detach().flatten() for p in net.model.classifier.parameters()]).clone(),
                "lrs": [g["lr"] for g in trainer.optimizers[0].param_groups],
            }
        )


def test_backbone_is_frozen_then_fine_tuned_at_a_lower_rate(tiny_resnet: Path, compose_cfg) -> None:
    overrides = ["model=hf_backbone", f"model.net.name={tiny_resnet}", "debug=limit", "extras.print_config=false"]
    cfg = compose_cfg("train", [*overrides, "callbacks.deploy=null", "model.freeze_epochs=1", "model.scheduler=null"])
    watch = BackboneWatch()
    before = torch.cat([p.flatten() for p in HFBackbone(str(tiny_resnet), 10).backbone.parameters()])
    result = run.train(cfg, extra_callbacks=[watch])
    first, second = watch.epochs
    assert torch.equal(first["backbone"], before)  # epoch 0: only the head learns ...
    assert not torch.equal(first["head"], second["head"])
    assert not torch.equal(second["backbone"], before)  # ... then all of it
    assert second["lrs"] == pytest.approx([1e-3, 1e-4])  # the backbone at backbone_lr_scale × lr
    hparams = torch.load(result["best_checkpoint"], weights_only=True)["hyper_parameters"]["net"]
    assert hparams["config"]["model_type"] == "resnet" and hparams["pretrained"] is False


def test_tiny_backbone_end_to_end_through_the_cli(tiny_resnet: Path, tmp_path: Path) -> None:
    engines = "deploy.backends=[eager,onnxruntime,openvino,inductor]"
    proc = run_cli(
        "train",
        "model=hf_backbone",
        f"model.net.name={tiny_resnet}",
        "model.freeze_epochs=1",
        "model.optimizer.lr=0.01",
        "trainer.max_epochs=3",
        "data.batch_size=32",
        "model.class_weights=balanced",
        "data.augment.flip=false",
        "+data.augment.resized_crop_scale=[0.8,1.0]",
        engines,
        "deploy.batch_sizes=[1,16]",
        *QUICK,
        log_dir=tmp_path / "logs",
        timeout=900,
    )
    folder = run_folder(proc)
    summary = read_metrics(folder)
    assert summary["metrics"]["test/acc"] > 0.3, summary["metrics"]  # chance is 0.1
    assert len(summary["test_report"]["confusion_matrix"]) == 10
    report = json.loads((folder / "benchmark.json").read_text())
    for name in ("onnxruntime", "openvino"):
        assert report["backends"][name]["status"] == "ok", report["backends"][name]
    # inductor is built, saved, reloaded and checked; on some trained nets its answers are wrong (issue 13,
    # item 4, fixed separately): then the parity gate must keep it out of the bundle
    inductor = report["backends"]["inductor"]
    assert inductor["status"] in ("ok", "parity_failed") and "passed" in inductor["parity"], inductor
    if inductor["status"] != "ok":
        assert report["chosen"] != "inductor"
        assert "inductor" not in [e["name"] for e in Bundle.open(folder / "deploy").info["engines"]]

    # the bundle rebuilds the net from its recorded architecture: the backbone's folder is not needed
    shutil.rmtree(tiny_resnet.parent / "moved", ignore_errors=True)
    moved = tiny_resnet.rename(tiny_resnet.parent / "moved")
    try:
        bundle = Bundle.open(folder / "deploy")
        assert bundle.net_config["_target_"] == "project.models.hf_backbone.HFBackbone"
        assert (bundle.preprocessing["height"], bundle.preprocessing["mean"]) == (16, [0.25])
        from project.data.digits import DigitsDataModule

        data = DigitsDataModule(val_size=180, image_size=16)
        data.setup()
        images, labels = data.splits["test"][0][:24], data.splits["test"][1][:24]
        save_pngs(tmp_path / "imgs", images[:, 0].numpy(), labels.numpy())
        with torch.no_grad():
            eager = bundle.net()(Preprocessor.from_spec(bundle.preprocessing).normalize(images)).argmax(1)
        # trusted: this run built the bundle, and the test is about the shipped engine (inductor when chosen)
        shipped = ("predict", f"bundle={folder / 'deploy'}", f"inputs={tmp_path / 'imgs'}", "trust_native_code=true")
        out = run_cli(*shipped, log_dir=tmp_path / "p")
    finally:
        moved.rename(tiny_resnet)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    predicted = [int(line["label"]) for line in sorted(lines, key=lambda line: line["input"])]
    assert predicted == eager.tolist()  # the files, through the shipped engine = eager on the prepared tensors


def test_frozen_backbone_trains_under_two_ddp_ranks(tiny_resnet: Path, tmp_path: Path) -> None:
    """`model=hf_backbone trainer=ddp_cpu` with `freeze_epochs` > 0: frozen weights get no gradient, which
    DDP's reducer rejects unless the strategy looks for unused parameters (it does so by itself)."""
    from tests.isolated_cli import run_isolated

    proc = run_isolated(
        "train",
        "model=hf_backbone",
        f"model.net.name={tiny_resnet}",
        "model.freeze_epochs=1",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "debug=limit",
        "deploy.enabled=false",
        "extras.print_config=false",
        "callbacks.progress_bar=null",
        log_dir=tmp_path / "logs",
        timeout=240,
    )
    assert "find_unused_parameters=True" in proc.stdout + proc.stderr
    assert read_metrics(run_folder(proc))["metrics"]["test/acc"] >= 0
