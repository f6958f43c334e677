"""Every command the documentation shows exists, and the ones marked runnable run.

A fenced ```bash block right after a `<!-- runnable -->` line is run line by line (`python` is this
interpreter), from the repository root; every run must exit 0. Elsewhere in README.md and docs/, every
`python -m project.<module>` must name an importable module, every `make <target>` a Makefile target and
every `python benchmarks/<script>.py` an existing script.
"""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MODULE = re.compile(r"python -m (project(?:\.\w+)*)")
MAKE = re.compile(r"(?:^|[\s(`;&])make ([a-z][\w-]*)")
SCRIPT = re.compile(r"python (benchmarks/[\w/]+\.py)")


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def code_of(text: str) -> str:
    """The code in a page: fenced blocks and inline code spans (prose says "make sure" too)."""
    blocks = [m.group(2) for m in FENCE.finditer(text)]
    outside = FENCE.sub("", text)
    return "\n".join(blocks + INLINE_CODE.findall(outside))


def runnable_commands(text: str) -> list[str]:
    commands = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        if before == RUNNABLE and match.group(1) == "bash":
            for line in match.group(2).splitlines():
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


def test_every_module_target_and_script_named_exists():
    targets = makefile_targets()
    missing = []
    for page in pages():
        code = code_of(page.read_text())
        name = page.relative_to(REPO)
        missing += [f"{name}: python -m {m}" for m in set(MODULE.findall(code)) if importlib.util.find_spec(m) is None]
        missing += [f"{name}: make {t}" for t in set(MAKE.findall(code)) if t not in targets]
        missing += [f"{name}: python {s}" for s in set(SCRIPT.findall(code)) if not (REPO / s).is_file()]
    assert missing == []


def test_the_checks_catch_a_missing_module_and_target():
    code = code_of("Run `python -m project.no_such_thing` and `make no-such-target`:\n```bash\nmake train\n```\n")
    assert MODULE.findall(code) == ["project.no_such_thing"]
    assert importlib.util.find_spec("project.no_such_thing") is None
    assert sorted(MAKE.findall(code)) == ["no-such-target", "train"]
    assert "no-such-target" not in makefile_targets() and "train" in makefile_targets()


def test_there_are_runnable_blocks():
    assert sum(len(runnable_commands(p.read_text())) for p in pages()) >= 3


@pytest.mark.parametrize(
    "command", [c for p in pages() for c in runnable_commands(p.read_text())], ids=lambda c: c[:60]
)
def test_a_runnable_command_runs(command):
    argv = shlex.split(command)
    if argv[0] == "python":
        argv[0] = sys.executable
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def test_ci_runs_the_readme_test_command_then_builds_the_site_strictly():
    ci = (REPO / ".ci" / "run").read_text()
    quick_start = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make test" in quick_start and "\nmake test\n" in ci
    assert ci.index("make test") < ci.index("make docs-build")
    assert "mkdocs build --strict" in (REPO / "Makefile").read_text()
