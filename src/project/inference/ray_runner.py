"""`python -m project.predict … runner=ray`: batch prediction on Ray Data.

The inputs become a Ray Dataset of paths/URIs; `map_batches` sends them to a fixed pool of actors, each
loading the bundle once and predicting with the same code as the local runner
(`project.inference.batch_records.predict_records`), so a file gets the same record either way. The
records are written as JSONL or Parquet shards under `output=`, then counted back from those files:
the summary reports what is on disk, and a shortfall (an input without a record) is an error, never
a silent drop. Ray's value is across machines (`ray.address=auto` joins a cluster); on one small
machine its start-up and scheduling cost more than they give (benchmarks/batch_predict.py measures it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from project.config import UserError
from project.inference.batch_records import predict_records
from project.inputs import is_uri

FORMATS = {"jsonl": ".json", "parquet": ".parquet"}  # Ray names JSON-lines shards *.json
# Offline and quiet: no usage-statistics upload, no FutureWarning about accelerator variables.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def record_schema() -> Any:
    """One schema for every shard (an all-error batch must not change a column's type)."""
    import pyarrow as pa

    top = pa.struct([("label", pa.string()), ("index", pa.int64()), ("score", pa.float64())])
    return pa.schema(
        [
            ("input", pa.string()),
            ("label", pa.string()),
            ("index", pa.int64()),
            ("score", pa.float64()),
            ("topk", pa.list_(top)),
            ("error", pa.string()),
        ]
    )


def records_table(records: Sequence[dict[str, Any]]) -> Any:
    """Records (local-runner dicts) → an Arrow table; the fields a record lacks are null."""
    import pyarrow as pa

    schema = record_schema()
    return pa.Table.from_pydict({name: [r.get(name) for r in records] for name in schema.names}, schema=schema)


class BundlePredictor:
    """One actor of the pool: loads the bundle once, then predicts every batch of inputs it is handed.
    Relative paths are read against the driver's working directory (`root`), as the local runner does."""

    def __init__(
        self,
        bundle: str,
        backend: str | None,
        batch_size: int | None,
        max_pixels: int,
        threads: int,
        topk: int,
        root: str,
        trust_native_code: bool = False,
    ) -> None:
        import torch

        from project.inference.predictor import Predictor

        torch.set_num_threads(threads)  # eager engines; ONNX Runtime/OpenVINO take `threads` below
        self.predictor = Predictor.load(
            bundle,
            backend=backend,
            batch_size=batch_size,
            max_pixels=max_pixels,
            threads=threads,
            trust_native_code=trust_native_code,
        )
        self.topk, self.root = topk, root

    def __call__(self, batch: Any) -> Any:
        entries = batch.column("input").to_pylist()
        return records_table(predict_records(self.predictor, entries, self.topk, root=self.root))


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Use the running Ray session (a test's, a notebook's) as is; else start a local instance
    (`address` null) or join a cluster, and shut down only what was started here."""
    import ray

    if ray.is_initialized():
        yield
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    options: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
    if address is None:  # an instance started here: on loopback, no dashboard
        options.update(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise UserError(f"cannot join the Ray cluster at ray.address={address} ({exc})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _quiet_data_context(progress: bool) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = progress and sys.stderr.isatty()
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.execution_options.preserve_order = True  # shards in input order
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"


def prepare_output(output: str | None, fmt: str, overwrite: bool) -> str:
    """The shard folder: absolute for a local path (the workers do not share our working directory).
    A non-empty folder is refused unless `overwrite`, which removes only earlier shards."""
    if not output:
        raise UserError("runner=ray writes a folder of shards: pass output=DIR (a local folder or a URI)")
    if is_uri(str(output)):
        return str(output)
    path = Path(os.path.expanduser(str(output))).resolve()
    if path.is_file():
        raise UserError(f"output={output} is a file: runner=ray writes a folder of {fmt} shards")
    existing = [p for p in path.iterdir()] if path.is_dir() else []
    if existing and not overwrite:
        raise UserError(f"output folder {output} is not empty: choose a new folder or pass ray.overwrite=true")
    others = [p.name for p in existing if not (p.is_file() and p.suffix == FORMATS[fmt])]
    if others:
        raise UserError(f"output folder {output} holds other files ({', '.join(others[:3])}): choose a new folder")
    for shard in existing:
        shard.unlink()
    return str(path)


def count_written(output: str, fmt: str) -> tuple[int, int]:
    """(records, error records) read back from the shards."""
    import pyarrow.compute as pc
    import ray.data

    shards = ray.data.read_parquet(output, columns=["error"]) if fmt == "parquet" else ray.data.read_json(output)
    count = failed = 0
    for batch in shards.iter_batches(batch_format="pyarrow", batch_size=None):
        count += batch.num_rows
        if "error" in batch.column_names:
            failed += pc.count(batch.column("error"), mode="only_valid").as_py()
    return count, failed


def predict_on_ray(cfg: DictConfig, files: list[str]) -> dict[str, Any]:
    """Predict `files` with the bundle on a Ray actor pool; write shards under `cfg.output`; return the summary."""
    from project.deploy.bundle import Bundle
    from project.inference.predictor import engine_for_workers, find_bundle
    from project.predict import summarize

    settings = cfg.ray
    fmt = str(settings.format)
    if fmt not in FORMATS:
        raise UserError(f"ray.format={fmt} is not known: use {' or '.join(FORMATS)}")
    sizes = {k: settings.get(k) for k in ("concurrency", "batch_size", "num_cpus_per_actor")}
    if any(not isinstance(v, int | float) or v <= 0 for v in sizes.values()):
        raise UserError(f"ray.concurrency, ray.batch_size and ray.num_cpus_per_actor must be positive, got {sizes}")
    try:
        import ray.data
    except ImportError:
        raise UserError("runner=ray needs Ray: pip install '.[scale]'") from None
    bundle = Bundle.open(find_bundle(cfg.bundle))  # a bad bundle is one line here, not an error in every actor
    trust_native_code = cfg.get("trust_native_code") is True
    # resolved on the driver, so every actor loads the same engine and the summary names it (pass backend=
    # for an engine only the actors' nodes can load, e.g. TensorRT from a CPU-only driver)
    engine = engine_for_workers(bundle, cfg.get("backend"), trust_native_code)
    if cfg.get("batch_size") is not None:
        bundle.check_batch_size(int(cfg.batch_size), engine, "batch_size")
    output = prepare_output(cfg.get("output"), fmt, bool(settings.get("overwrite", False)))

    with ray_session(settings.get("address"), settings.get("num_cpus")):
        _quiet_data_context(bool(cfg.get("progress", True)))
        start = time.perf_counter()
        predictions = ray.data.from_items([{"input": f} for f in files]).map_batches(
            BundlePredictor,
            fn_constructor_kwargs={
                "bundle": str(bundle.directory.resolve()),
                "backend": engine,
                "batch_size": None if cfg.get("batch_size") is None else int(cfg.batch_size),
                "max_pixels": int(cfg.max_pixels),
                "threads": max(1, int(sizes["num_cpus_per_actor"])),
                "topk": int(cfg.topk),
                "root": os.getcwd(),
                "trust_native_code": trust_native_code,
            },
            batch_size=int(sizes["batch_size"]),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=int(sizes["concurrency"])),
            num_cpus=float(sizes["num_cpus_per_actor"]),
        )
        if fmt == "parquet":
            predictions.write_parquet(output)
        else:
            # pandas writes 10 significant digits by default; scores keep (almost) full precision
            predictions.write_json(output, pandas_json_args_fn=lambda: {"double_precision": 15})
        seconds = time.perf_counter() - start
        count, failed = count_written(output, fmt)
    if count != len(files):
        raise RuntimeError(f"{len(files)} inputs but {count} records in {output}: some inputs were lost")
    return summarize(
        count,
        failed,
        seconds,
        runner="ray",
        backend=engine,
        bundle=str(bundle.directory),
        output=output,
        format=fmt,
        actors=int(sizes["concurrency"]),
    )
