"""Backend registry: `kind` name → Backend class. A new engine is one file here plus one line below.

Every backend module imports its inference library lazily, so importing the registry stays cheap and a
missing library only makes that one backend report itself unavailable."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from project.deploy.backends.base import Backend, BackendUnavailable
from project.deploy.backends.eager import EagerBackend
from project.deploy.backends.inductor import InductorBackend
from project.deploy.backends.onnxruntime import OnnxRuntimeBackend
from project.deploy.backends.openvino import OpenVinoBackend
from project.deploy.backends.tensorrt import TensorRtBackend
from project.deploy.hardware import PRECISIONS, Engine

BACKENDS: dict[str, type[Backend]] = {
    EagerBackend.kind: EagerBackend,
    OnnxRuntimeBackend.kind: OnnxRuntimeBackend,
    OpenVinoBackend.kind: OpenVinoBackend,
    InductorBackend.kind: InductorBackend,
    TensorRtBackend.kind: TensorRtBackend,
}

# name suffixes that set an option, so a command line can say `deploy.backends=[eager_channels_last]`
FLAGS: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "async": {"hint": "throughput"},
    "from_onnx": {"source": "onnx"},
}


def baseline_backend() -> Backend:
    """Eager fp32: the parity reference, the 1.0× of every speedup, and a bundle's last fallback."""
    return EagerBackend()


def library_versions() -> dict[str, str]:
    """Versions of python, this project, torch and every backend library that is installed here."""
    import torch

    import project

    versions = {"python": platform.python_version(), "project": project.__version__, "torch": torch.__version__}
    libraries = [lib for cls in BACKENDS.values() for lib in cls.libraries]
    for dist in dict.fromkeys([*libraries, "onnx", "lightning"]):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return versions


def backend_from_spec(spec: dict[str, Any]) -> Backend:
    """Rebuild a backend from `Backend.spec` (as stored in a bundle)."""
    kind = spec["kind"]
    if kind not in BACKENDS:
        raise BackendUnavailable(f"unknown backend kind {kind!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[kind](name=spec.get("name"), precision=spec.get("precision", "fp32"), **spec.get("options", {}))


def native_code_refusal(spec: Mapping[str, Any], trusted: bool = False) -> str | None:
    """Why a saved engine (a bundle's record) must not load unless `trusted`: its files run code when loaded,
    and whoever can edit a bundle can rewrite its manifest too. None: its files are data (or its kind is
    unknown here, so it cannot load at all), or the caller trusts them."""
    cls = BACKENDS.get(str(spec.get("kind")))
    if trusted or cls is None or not cls.loads_native_code:
        return None
    return f"{spec.get('name')}: {cls.native_code}; pass trust_native_code=true for a bundle you built or trust"


def parse_backend(entry: str | Mapping[str, Any]) -> Backend:
    """A config entry → a backend. A string is `kind[_precision][_flag...]`, e.g. `openvino_bf16`,
    `eager_channels_last`, `openvino_bf16_async`; a mapping is `{kind, precision, name, **options}`."""
    if isinstance(entry, Mapping):
        spec = dict(entry)
        kind = spec.pop("kind", None)
        if kind is None:
            raise ValueError(f"backend entry {entry!r} has no `kind` (one of {sorted(BACKENDS)})")
        return backend_from_spec(
            {"kind": kind, "name": spec.pop("name", None), "precision": spec.pop("precision", "fp32"), "options": spec}
        )
    name = str(entry)
    kind = next((k for k in sorted(BACKENDS, key=len, reverse=True) if name == k or name.startswith(k + "_")), None)
    if kind is None:
        raise ValueError(f"unknown backend {name!r}: expected one of {sorted(BACKENDS)}, optionally + _bf16/_fp16")
    precision, options = "fp32", {}
    rest = name[len(kind) + 1 :]
    while rest:
        token = next((t for t in (*PRECISIONS, *FLAGS) if rest == t or rest.startswith(t + "_")), None)
        if token is None:
            raise ValueError(f"backend {name!r}: cannot read {rest!r} (precisions {PRECISIONS}, flags {list(FLAGS)})")
        if token in PRECISIONS:
            precision = token
        else:
            options.update(FLAGS[token])
        rest = rest[len(token) + 1 :]
    return BACKENDS[kind](name=name, precision=precision, **options)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "Engine",
    "backend_from_spec",
    "baseline_backend",
    "library_versions",
    "native_code_refusal",
    "parse_backend",
]
