"""The config pre-check (`project.command_line`: typed values, did-you-mean) runs for every entry point, not
only `train`: a mistake is one line naming the key and the fix, exit 2, before the command does anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from project.command_line import check_command_line

# one mistake per entry point, run through the real command line, and the line it must end with
MISTAKES: dict[str, tuple[list[str], str]] = {
    "tune": (["optimized_metrc=val/acc"], "error: optimized_metrc: no such key; did you mean `optimized_metric`?"),
    "serve": (["port=abc"], "error: port: expected a number (default 8000), got 'abc'"),
    "predict": (["topkk=3"], "error: topkk: no such key; did you mean `topk`?"),
    "eval": (["ckpt_pth=x.ckpt"], "error: ckpt_pth: no such key; did you mean `ckpt_path`?"),
    "benchmark": (["random_weights=maybe"], "error: random_weights: expected true or false, got 'maybe'"),
    "export": (["formt=triton"], "error: formt: no such key; did you mean `format`?"),
    "prepare": (["data.batch_size=abc"], "error: data.batch_size: expected int, got 'abc'"),
}


def test_every_entry_point_rejects_a_mistake_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"project.{name}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for name, (args, _) in MISTAKES.items()
    }
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
        assert proc.returncode == 2, (name, stdout[-1500:], stderr[-1500:])
        assert lines == [MISTAKES[name][1]], (name, lines)
    assert list(tmp_path.iterdir()) == []  # nothing written: no run folder, no outputs


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ("serve", ["workers=two"], "workers: expected a number (default 1), got 'two'"),
        ("serve", ["allow_unauthenticated=sure"], "allow_unauthenticated: expected true or false"),
        ("predict", ["fail_on_error=maybe"], "fail_on_error: expected true or false, got 'maybe'"),
        ("predict", ["ray.concurency=4"], "ray.concurency: no such key; did you mean `concurrency`?"),
        ("export", ["triton.instances=two"], "triton.instances: expected a number (default 1), got 'two'"),
        ("eval", ["trainer.max_epochs=1.5"], "trainer.max_epochs: expected int, got 1.5"),
    ],
)
def test_typed_values_and_suggestions(config: str, args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(config, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


@pytest.mark.parametrize(
    ("config", "args"),
    [
        ("serve", ["port=8001", "host=0.0.0.0", "batch_timeout=1", "timeout=2.5", "log_level=info", "api_key=123"]),
        ("predict", ["topk=3", "batch_size=8", "progress=false", "bundle=/x", "ray.concurrency=4"]),
        ("benchmark", ["random_weights=true", "input_shape=[1,8,8]", "deploy.strict=false"]),
        ("export", ["bundle=/x", "out=/y"]),
        ("tune", ["hparams_search=digits_optuna", "seed=1"]),
    ],
)
def test_valid_command_lines_pass(config: str, args: list[str]) -> None:
    check_command_line(config, args)  # no SystemExit
