"""The deploy bundle: a self-describing folder an application loads to get predictions.

deploy/
  bundle.json          format, chosen engine, engines in fallback order (backend specs + files), and the
                       batch sizes parity checked every engine at (`verified_batch_sizes`)
  model.json           the network's `_target_` config
  weights.safetensors  eager fp32 weights (tensors only: nothing to unpickle)
  preprocessing.json   input size, channels, value range, mean/std
  classes.json         class names
  versions.json        what it was built with
  benchmark.json       the post-fit benchmark (when there is one)
  pictures/*.png       what the serving page shows: benchmark.png, the data card's samples.png and
                       class_counts.png (those the run had)
  engines/<name>/...   each engine's own files
  manifest.json        sha256 of every file above; checked on load
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from project.atomic import atomic_dir
from project.config import UserError
from project.deploy import backends
from project.deploy.backends import Backend, Engine, backend_from_spec, baseline_backend, library_versions
from project.deploy.results import BenchmarkReport
from project.models.from_config import build_net, check_net_config

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(UserError):
    """The bundle is missing, incomplete or has been changed since it was written."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_bundle(
    directory: str | Path,
    net: nn.Module,
    net_config: dict[str, Any],
    input_spec: dict[str, Any],
    engines: list[tuple[Backend, Engine]] = (),
    benchmark: dict[str, Any] | None = None,
    verified_batch_sizes: Sequence[int] | None = None,
    pictures: Sequence[Path] = (),
) -> Path:
    """Write a bundle. `engines` come in preference order (the chosen one first); eager fp32 is always the
    last resort, so the bundle loads on any machine. `verified_batch_sizes`: the batch sizes parity checked
    every engine at; the largest is the most a predictor or server may run at once. `pictures`: PNGs for the
    serving page, copied into `pictures/`. Written to a temporary folder, then moved into place: a failure
    never leaves half a bundle."""
    directory = Path(directory)
    # swapped in by renames (`atomic_dir`): a kill at any point leaves the old bundle, the new one, or no
    # `directory` at all (refused with "bundle not found"), never a mix; the manifest is written last
    with atomic_dir(directory) as tmp:
        _write_files(tmp, net, net_config, input_spec, engines, benchmark, verified_batch_sizes)
        if pictures:
            (tmp / "pictures").mkdir()
            for picture in pictures:
                shutil.copyfile(picture, tmp / "pictures" / picture.name)
        _write_json(tmp / MANIFEST, {"files": {p.relative_to(tmp).as_posix(): sha256(p) for p in _files(tmp)}})
    return directory


def _write_files(
    tmp: Path,
    net: nn.Module,
    net_config: dict[str, Any],
    input_spec: dict[str, Any],
    engines: list[tuple[Backend, Engine]],
    benchmark: dict[str, Any] | None,
    verified_batch_sizes: Sequence[int] | None,
) -> None:
    """Every file of the bundle into `tmp` but the pictures and the manifest."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, tmp / "weights.safetensors")
    _write_json(tmp / "model.json", {"net": net_config})
    spec = {k: v for k, v in input_spec.items() if k != "class_names"}
    _write_json(tmp / "preprocessing.json", spec)
    _write_json(tmp / "classes.json", list(input_spec.get("class_names") or []))
    _write_json(tmp / "versions.json", library_versions())
    if benchmark is not None:
        _write_json(tmp / "benchmark.json", benchmark)

    records = []
    for backend, engine in engines:
        engine_dir = tmp / "engines" / backend.name
        engine_dir.mkdir(parents=True, exist_ok=True)
        files = backend.save(engine, engine_dir)
        records.append({**backend.spec, "files": [f"engines/{backend.name}/{f}" for f in files]})
    _write_json(
        tmp / "bundle.json",
        {
            "format": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "chosen": records[0]["name"] if records else baseline_backend().name,
            "engines": records,
            **({"verified_batch_sizes": sorted(verified_batch_sizes)} if verified_batch_sizes else {}),
        },
    )


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def verify_manifest(directory: Path) -> dict[str, str]:
    """Every file listed must exist with the same sha256; refuse the bundle otherwise."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{directory} has no {MANIFEST}: not a deploy bundle (expected <run>/deploy)")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise BundleError(f"{manifest_path} is unreadable ({exc}); rebuild the bundle") from None
    for rel, expected in files.items():
        path = directory / rel
        if not path.is_file():
            raise BundleError(f"bundle file missing: {rel} (listed in {manifest_path}); rebuild the bundle")
        if sha256(path) != expected:
            raise BundleError(f"bundle file changed since it was written: {rel} (sha256 mismatch); rebuild it")
    return files


@dataclass
class Bundle:
    """A verified bundle on disk; `engine()` loads the preferred engine that works on this machine."""

    directory: Path
    info: dict[str, Any]
    net_config: dict[str, Any]
    preprocessing: dict[str, Any]
    class_names: list[str]
    benchmark: BenchmarkReport | None = None
    _net: nn.Module | None = field(default=None, repr=False)

    @classmethod
    def open(cls, directory: str | Path) -> Bundle:
        directory = Path(directory)
        if not directory.is_dir():
            raise BundleError(f"bundle not found: {directory} (pass the deploy/ folder of a training run)")
        verify_manifest(directory)

        def read(name: str) -> Any:
            return json.loads((directory / name).read_text())

        model = read("model.json")
        net_config = model.get("net") if isinstance(model, dict) else None
        if not isinstance(net_config, dict):
            raise BundleError(f"{directory / 'model.json'} has no network config (net); rebuild the bundle")
        # the manifest proves only that files agree with each other: whoever edits model.json can rewrite
        # it too, so the network config is checked node by node before anything is built from it
        check_net_config(net_config, f"{directory / 'model.json'} net")
        return cls(
            directory=directory,
            info=read("bundle.json"),
            net_config=net_config,
            preprocessing=read("preprocessing.json"),
            class_names=read("classes.json"),
            benchmark=BenchmarkReport.from_json(read("benchmark.json"))
            if (directory / "benchmark.json").is_file()
            else None,
        )

    @property
    def model_name(self) -> str:
        """`project.models.nets.DigitsCNN` → `digits_cnn`: the network class, URL-safe. The one default name
        the V2 server and the Triton export both use."""
        target = str(self.net_config.get("_target_", "model")).rsplit(".", 1)[-1]
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", target).lower() or "model"

    @property
    def verified_batch_sizes(self) -> list[int] | None:
        """The batch sizes parity checked every engine of the bundle at. A bundle from before this was
        recorded: its benchmark's timed sizes (parity ran at the largest, the engines were built for it);
        with no benchmark either (written by hand): None, nothing to hold a batch size to."""
        sizes = self.info.get("verified_batch_sizes") or (self.benchmark.batch_sizes if self.benchmark else None)
        return sorted(int(b) for b in sizes) if sizes else None

    def batch_limit(self, engine: str | None = None) -> int | None:
        """The largest batch `engine` (default: the chosen one) may run: the top of the verified range, or
        the engine's own fixed maximum (a TensorRT engine's) where that is smaller. None: no limit known."""
        record = self.record(engine or self.info.get("chosen"))
        limits = [self.verified_batch_sizes[-1]] if self.verified_batch_sizes else []
        if record is not None:
            with contextlib.suppress(Exception):  # a kind unknown here has no limit we could read
                limits += [int(m) for m in [backend_from_spec(record).max_batch_size] if m]
        return min(limits) if limits else None

    def check_batch_size(self, batch_size: int, engine: str | None, setting: str) -> None:
        """Refuse, in one line, a batch size above what `engine` was verified (or built) for."""
        limit, name, sizes = self.batch_limit(engine), engine or self.info.get("chosen"), self.verified_batch_sizes
        if limit is not None and batch_size > limit:
            why = f"parity checked at batch sizes {sizes}" if sizes and sizes[-1] == limit else "built for no more"
            raise BundleError(
                f"{setting}={batch_size} is above the largest batch this bundle's {name} engine may run "
                f"({limit}: {why}): pass {setting}={limit} or less, or rebuild the bundle with "
                f"deploy.batch_sizes up to {batch_size}"
            )

    def net(self) -> nn.Module:
        """The eager fp32 network with the bundle's weights (built once)."""
        if self._net is None:
            net = build_net(self.net_config, f"{self.directory / 'model.json'} net")
            net.load_state_dict(load_file(self.directory / "weights.safetensors"))
            self._net = net.float().eval()
        return self._net

    def record(self, name: str | None) -> dict[str, Any] | None:
        """The bundle.json record of engine `name` (None for the baseline, built from the weights)."""
        return next((r for r in self.info.get("engines", []) if r["name"] == name), None)

    @property
    def engine_names(self) -> list[str]:
        """Every engine this bundle can load by name: its engines in fallback order, then the baseline."""
        names = [r["name"] for r in self.info.get("engines", [])]
        baseline = baseline_backend().name
        return names if baseline in names else [*names, baseline]

    def check_engine_name(self, name: str, trust_native_code: bool = False) -> None:
        """Refuse in one line a name this bundle lacks, or, unless trusted, an engine whose files run code."""
        if name not in self.engine_names:
            raise BundleError(f"bundle has no engine {name!r}; it has {', '.join(self.engine_names)}")
        record = self.record(name) or {}
        if refusal := backends.native_code_refusal(record, trust_native_code):
            raise BundleError(f"not loading engine {refusal}")

    def engine(
        self, backend: str | None = None, threads: int | None = None, trust_native_code: bool = False
    ) -> tuple[str, Engine]:
        """Load `backend` by name, exactly that one: a name the bundle lacks, or an engine that cannot load
        here, is refused with one line. With no name: the chosen engine, falling back along the bundle's
        list, then to eager fp32, saying once which engine it fell back to and why. `threads` pins the
        engine's own thread pool (None = the library's default): a server sharing a small host sets it.
        Engines whose files run code when loaded load only with `trust_native_code` (else skipped, unopened)."""
        if backend is not None:
            return backend, self._requested_engine(backend, threads, trust_native_code)
        failures = []
        for record in self.info.get("engines", []):
            if refusal := backends.native_code_refusal(record, trust_native_code):
                failures.append(refusal)
                continue
            try:
                engine = self._load(record, threads)
            except Exception as exc:
                failures.append(f"{record['name']}: {type(exc).__name__}: {exc}")
                continue
            if failures:
                log.warning("engine fallback to %s (%s)", record["name"], "; ".join(failures))
            return record["name"], engine
        if failures:
            log.warning("engine fallback to eager fp32 (%s)", "; ".join(failures))
        return baseline_backend().name, self._baseline(threads)

    def _requested_engine(self, name: str, threads: int | None, trust_native_code: bool) -> Engine:
        self.check_engine_name(name, trust_native_code)
        if (record := self.record(name)) is None:
            return self._baseline(threads)  # the baseline, from the weights file every bundle has
        try:
            return self._load(record, threads)
        except Exception as exc:
            raise BundleError(
                f"engine {name!r} cannot load here ({type(exc).__name__}: {exc}); "
                "leave backend unset to fall back along the bundle's engines"
            ) from None

    def _load(self, record: dict[str, Any], threads: int | None) -> Engine:
        return backend_from_spec(record).load(self.directory / "engines" / record["name"], self.net(), threads)

    def _baseline(self, threads: int | None) -> Engine:
        """Eager fp32 built from the weights file: always there."""
        return baseline_backend().build(self.net(), torch.empty(0), 0, threads)
