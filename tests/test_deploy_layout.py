"""The code's shape, enforced: no branching on an engine's name or kind outside `deploy/backends/` (what
an engine needs is a `Backend` attribute), `deploy/` and `tracking/` below `project.run`, modules short."""

from __future__ import annotations

import re
from pathlib import Path

from project.deploy.backends import BACKENDS

SRC = Path(__file__).resolve().parents[1] / "src" / "project"
BACKENDS_DIR = SRC / "deploy" / "backends"
MAX_LINES = 300

_KIND = "|".join(sorted(BACKENDS, key=len, reverse=True))
_LITERAL = rf"""["'](?:{_KIND})(?:_\w+)?["']"""
# a comparison with an engine's name or kind: `x == "eager"`, `"onnxruntime" != x`, `x in ("eager", ...)`,
# `{"eager"}`, `.kind == ...`, `.kind in ...`
ENGINE_BRANCH = re.compile(
    rf"(==|!=)\s*{_LITERAL}|{_LITERAL}\s*(==|!=)|\bin\s*[(\[{{][^)\]}}]*{_LITERAL}|\{{\s*{_LITERAL}\s*\}}"
    r"|\.kind\s*(==|!=|\bin\b|\bnot in\b)"
)


def _sources(*parts: str) -> list[Path]:
    return sorted(SRC.joinpath(*parts).rglob("*.py"))


def test_the_pattern_catches_the_branches_it_is_meant_to() -> None:
    for line in (
        'if backend != "eager":',
        'device if backend.kind in ("eager", "inductor") else "cpu"',
        'kinds = {n for n in order} | {"eager"}',
        "if entry.kind == other:",
        "if 'openvino_bf16' == name:",
    ):
        assert ENGINE_BRANCH.search(line), line
    for line in ('return spec.get("chosen", "eager")', "if name == wanted:", 'backends: ["eager", "openvino"]'):
        assert not ENGINE_BRANCH.search(line), line


def test_no_engine_name_or_kind_branches_outside_the_backends() -> None:
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in _sources()
        if BACKENDS_DIR not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ENGINE_BRANCH.search(line)
    ]
    assert not found, "give Backend an attribute instead of comparing engine names or kinds:\n" + "\n".join(found)


def test_deploy_and_tracking_do_not_import_the_run_module() -> None:
    pattern = re.compile(r"^\s*(from project\.run import|import project\.run\b|from project import run\b)", re.M)
    found = [
        str(p.relative_to(SRC)) for p in _sources("deploy") + _sources("tracking") if pattern.search(p.read_text())
    ]
    assert not found, f"deploy/ and tracking/ sit below project.run; they import it in {found}"


def test_no_source_module_is_longer_than_the_limit() -> None:
    long = {str(p.relative_to(SRC)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
