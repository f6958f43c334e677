"""Copy project modules, and the project modules they import, into a folder where they import without the
project installed: the preprocessing model runs the project's own code, not a re-implementation."""

from __future__ import annotations

import ast
import importlib.util
import shutil
from pathlib import Path

PACKAGE = "project"


def _source(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


def _project_imports(path: Path) -> set[str]:
    """Project modules a file imports at module level or inside functions (`from project.x import y`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE or node.module.startswith(PACKAGE + "."):
                found.add(node.module)
                # `from project.data import augment`: the name may itself be a module
                found.update(f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
    return found


def project_closure(roots: list[str]) -> dict[str, Path]:
    """Every project module reachable from `roots` through imports: module name → source file."""
    seen: dict[str, Path] = {}
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in seen or module == PACKAGE:
            continue
        seen[module] = _source(module)
        pending.extend(_project_imports(seen[module]) - set(seen))
    return seen


def vendor_modules(roots: list[str], destination: Path) -> list[str]:
    """Copy the closure of `roots` under `destination/project/...`, with empty `__init__.py` files for
    the packages (the real ones may import far more than is needed). Returns the files written."""
    written = []
    for module, source in sorted(project_closure(roots).items()):
        parts = module.split(".")
        if source.name == "__init__.py":
            target = destination.joinpath(*parts, "__init__.py")
        else:
            target = destination.joinpath(*parts[:-1], parts[-1] + ".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target.relative_to(destination).as_posix())
    packages = {folder for p in destination.rglob("*.py") for folder in p.relative_to(destination).parents}
    for folder in sorted(packages - {Path(".")}):  # every level: a folder without one is a namespace package
        init = destination / folder / "__init__.py"
        if not init.exists():
            init.write_text("")
    return written
