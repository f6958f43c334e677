"""`atomic_dir`: a folder is replaced whole or not at all (the bundle, a prepared set, a Triton model and
the CIFAR-10 batch folder are all written through it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from project.atomic import atomic_dir


def test_a_new_folder_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    with atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and tmp != target
        assert not target.exists()  # nothing at the final name while the folder is being built
        (tmp / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]  # no temporary or old folder left


def test_an_existing_folder_is_replaced_not_merged(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]


def test_a_failure_inside_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    target.mkdir()
    (target / "good.txt").write_text("old")
    with pytest.raises(RuntimeError, match="mid-build"), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("mid-build")
    assert sorted(p.name for p in target.iterdir()) == ["good.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["deploy"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    target.mkdir()
    (target / "good.txt").write_text("old")
    with pytest.raises(OSError), atomic_dir(target) as tmp:
        tmp.rmdir()  # the final rename now fails: nothing to move in
    assert sorted(p.name for p in target.iterdir()) == ["good.txt"]


def test_leftovers_of_a_killed_writer_are_cleared(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    for suffix in ("tmp", "old"):
        (tmp_path / f".deploy.{pid}.0badf00d.{suffix}").mkdir()
    (tmp_path / f".deploy.{os.getpid()}.0badf00d.tmp").mkdir()  # a live writer's: left alone
    with atomic_dir(tmp_path / "deploy") as tmp:
        (tmp / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".deploy.{os.getpid()}.0badf00d.tmp", "deploy"]
