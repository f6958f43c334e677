"""Backend registry: `kind` name → Backend class. A new engine is one file here plus one line below."""

from __future__ import annotations

from typing import Any

from project.deploy.backends.base import Backend, BackendUnavailable, Engine
from project.deploy.backends.eager import EagerBackend

BACKENDS: dict[str, type[Backend]] = {
    EagerBackend.kind: EagerBackend,
}


def backend_from_spec(spec: dict[str, Any]) -> Backend:
    """Rebuild a backend from `Backend.spec` (as stored in a bundle)."""
    kind = spec["kind"]
    if kind not in BACKENDS:
        raise BackendUnavailable(f"unknown backend kind {kind!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[kind](name=spec.get("name"), precision=spec.get("precision", "fp32"), **spec.get("options", {}))


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "Engine", "backend_from_spec"]
