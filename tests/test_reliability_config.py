"""Config mistakes caught before anything runs (one line, exit 2), errors that end the output, a suite that
ignores the shell's variables, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from project.atomic import atomic_path, atomic_write_text
from project.command_line import _compose
from project.config import config_dir
from project.validation import ConfigError, config_errors, validate_config
from tests.conftest import read_metrics


def run_many(commands: dict[str, list[str]], log_dir: Path, env: dict[str, str] | None = None) -> dict:
    """Several `python -m project.train ...` at once (they are short): name → CompletedProcess-like tuple."""
    base = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200", **(env or {})}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "project.train", f"paths.log_dir={log_dir}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=base,
        )
        for name, args in commands.items()
    }
    return {name: (p.wait(timeout=300), *p.communicate()) for name, p in procs.items()}


MODEL_OPTIONS = sorted(p.stem for p in (Path(config_dir()) / "model").glob("*.yaml"))


def test_config_mistakes_are_one_line_before_anything_runs(tmp_path: Path) -> None:
    results = run_many(
        {
            "type": ["trainer.max_epochs=abc"],
            "typo": ["trainer.max_epoch=3"],
            "option": ["model=foo"],
            "top": ["seed=abc"],
        },
        tmp_path,
    )
    expected = {
        "type": "error: trainer.max_epochs: expected int, got 'abc'",
        "typo": "did you mean `max_epochs`?",
        "option": f"error: model=foo: no such option; choose one of: {', '.join(MODEL_OPTIONS)}",
        "top": "error: seed: expected int, got 'abc'",
    }
    for name, (rc, stdout, stderr) in results.items():
        lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
        assert rc == 2, (name, stdout[-1500:], stderr[-1500:])
        assert 1 <= len(lines) <= 3 and "Traceback" not in stderr, (name, lines)
        assert expected[name] in lines[-1], (name, lines)
    assert not (tmp_path / "train").exists()  # no run folder for a config that cannot work


def test_hydra_full_error_still_shows_everything(tmp_path: Path) -> None:
    ((rc, _stdout, stderr),) = run_many({"x": ["model=foo"]}, tmp_path, env={"HYDRA_FULL_ERROR": "1"}).values()
    assert rc != 0
    assert "Traceback" in stderr and "Available options in 'model'" in stderr


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["+experiment=cifar"],
        ["+experiment=cifar", "model=resnet18"],
        ["+experiment=digits_wide", "model=digits_tiny"],
        ["trainer=ddp_cpu", "logger=many"],
        ["trainer=gpu", "logger=wandb", "deploy=full"],
        ["debug=fdr"],
        ["debug=overfit", "callbacks=none", "logger=none"],
        ["debug=limit", "+hparams_search=digits_optuna"],
        ["+callbacks=[default,early_stopping]"],
    ],
)
def test_every_shipped_config_validates(overrides: list[str]) -> None:
    assert config_errors(_compose("train", overrides)) == []
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.optimizer.lr=fast"], "model.optimizer.lr: expected float or Tensor, got 'fast'"),
        (["+model.optimizer.betas_=[0.9,0.99]"], "did you mean `betas`?"),
        (["+callbacks=[default,early_stopping]", "callbacks.early_stopping.patience=soon"], "expected int"),
        (["trainer.precision=33"], "trainer.precision: expected one of"),
        (["data.batch_size=1.5"], "data.batch_size: expected int, got 1.5"),
        (["+data.augment_crop=2"], "DigitsDataModule has no setting `augment_crop`; did you mean `augment`?"),
        (["model.net._target_=project.models.nets.NoSuchNet"], "cannot import"),
        (["test=maybe"], "test: expected bool"),
        (["deploy.enabled=maybe"], "deploy.enabled: expected bool, got 'maybe'"),
        (["+deploy.backendz=[eager]"], "unknown deploy keys ['backendz']"),
    ],
)
def test_validation_names_the_key_and_the_fix(overrides: list[str], message: str) -> None:
    cfg = _compose("train", overrides)
    with pytest.raises(ConfigError, match=None) as err:
        validate_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_errors_end_the_output_without_the_config_tree(tmp_path: Path) -> None:
    """A data error and a checkpoint error: the last line is the error, the config tree is not printed
    before it (it is saved in the run folder)."""
    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    empty = tmp_path / "no_cifar"
    results = run_many(
        {
            "data": ["+experiment=cifar", f"data.data_dir={empty}", "data.download=false", "logger=csv"],
            "ckpt": [f"ckpt_path={bad_ckpt}"],
        },
        tmp_path / "logs",
    )
    for name, (rc, stdout, stderr) in results.items():
        lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
        assert rc == 2, (name, stderr[-2000:])
        assert lines[-1].startswith("error: "), (name, lines[-5:])
        assert "CONFIG" not in stdout and "Traceback" not in stderr, name
        assert len(lines) < 40, (name, len(lines), lines[:20])
    assert "CIFAR-10 not found" in results["data"][2]
    assert "not a readable checkpoint" in results["ckpt"][2]
    assert list((tmp_path / "logs").glob("train/runs/*/config_tree.log"))  # the tree is in the run folder


def test_suite_is_hermetic_against_the_shell(tmp_path: Path) -> None:
    """A pytest started with the project's, W&B's and Hydra's variables set sees none of them."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n"
        "def test_env():\n"
        "    assert 'PROJECT_ROOT' not in os.environ and 'HYDRA_FULL_ERROR' not in os.environ\n"
        "    assert os.environ['WANDB_MODE'] == 'offline' and 'WANDB_API_KEY' not in os.environ\n"
        "    assert 'WANDB_DIR' not in os.environ\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PROJECT_ROOT": str(tmp_path / "elsewhere"),
        "HYDRA_FULL_ERROR": "1",
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "x" * 40,
        "WANDB_DIR": str(tmp_path / "wandb"),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root)]
    cmd += ["--confcutdir", str(root), "-c", str(root / "pyproject.toml"), "--noconftest", str(probe)]
    # the project's conftest is loaded as a plugin, as the suite loads it
    proc = subprocess.run([*cmd, "-p", "tests.conftest"], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    atomic_write_text(target, json.dumps({"a": 1}))
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"a": 2, "half')
        raise RuntimeError("killed midway")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file, whole
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_metrics_json_is_replaced_not_rewritten_in_place(tmp_path: Path) -> None:
    """run.report renames a complete file over metrics.json (a new inode), never truncates the old one."""
    from project import run

    (tmp_path / "metrics.json").write_text("{}")
    before = (tmp_path / "metrics.json").stat().st_ino
    run.report({"metrics": {"test/acc": 0.5}, "best_checkpoint": None}, tmp_path)
    assert (tmp_path / "metrics.json").stat().st_ino != before
    assert read_metrics(tmp_path)["metrics"] == {"test/acc": 0.5}
