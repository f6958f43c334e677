"""`python -m project.predict runner=ray`: a real Ray instance (2 CPUs, no dashboard, one per module) runs
a few hundred generated images and bad files through an actor pool; its records must equal the local
runner's, one per input, from JSONL and Parquet shards alike, and the CLI joins a running cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from project.config import UserError
from project.deploy.backends.eager import EagerBackend
from project.deploy.backends.onnxruntime import OnnxRuntimeBackend
from project.deploy.bundle import write_bundle
from project.inference.ray_runner import QUIET_ENV
from project.predict import predict
from tests.conftest import compose_config, run_cli
from tests.inference_helpers import NET_CONFIG, digit_samples, save_pngs

ray = pytest.importorskip("ray")
N_IMAGES = 300


@pytest.fixture(scope="module")
def ray_address() -> str:
    """One local Ray instance for the module (ray.init takes seconds), shut down at the end."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _node_ip_address="127.0.0.1")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_bundle(digits_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained digits net with ONNX Runtime chosen (its batches differ between runners) and eager."""
    net, data = digits_model
    example = torch.zeros(2, 1, 8, 8)
    engines = [(backend, backend.build(net, example, 64)) for backend in (OnnxRuntimeBackend(), EagerBackend())]
    return write_bundle(tmp_path_factory.mktemp("ray") / "deploy", net, NET_CONFIG, data.input_spec(), engines)


@pytest.fixture(scope="module")
def image_list(digits_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text file naming 300 real digit PNGs (plain paths and file:// URIs) and four bad inputs."""
    folder = tmp_path_factory.mktemp("images")
    images, labels = digit_samples(digits_model[1], N_IMAGES)
    paths = save_pngs(folder / "png", images, labels)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.png").write_bytes(b"")
    entries = [p.relative_to(folder).as_posix() if i % 2 else p.as_uri() for i, p in enumerate(paths)]
    entries[100:100] = ["corrupt.png", "empty.png", "missing.png", (folder / "gone.png").as_uri()]
    listing = folder / "inputs.txt"
    listing.write_text("# one input a line\n" + "\n".join(entries) + "\n")
    return listing


def records_by_input(rows: list[dict]) -> dict[str, dict]:
    """Ray writes every column (nulls where a record has none); the local runner omits them."""
    return {row["input"]: {k: v for k, v in row.items() if v is not None} for row in rows}


def assert_same_records(local: dict[str, dict], other: dict[str, dict]) -> None:
    assert other.keys() == local.keys()
    for name, expected in local.items():
        got = other[name]
        assert got.keys() == expected.keys(), name
        if "error" in expected:
            assert got["error"] == expected["error"]
            continue
        assert (got["label"], got["index"]) == (expected["label"], expected["index"]), name
        assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert [t["index"] for t in got["topk"]] == [t["index"] for t in expected["topk"]]


def run_predict(bundle: Path, listing: Path, tmp_path: Path, overrides: list[str]) -> dict:
    cfg = compose_config("predict", tmp_path, [f"bundle={bundle}", f"inputs={listing}", "topk=3", *overrides])
    return predict(cfg)


@pytest.fixture(scope="module")
def local_records(onnx_bundle: Path, image_list: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("local")
    summary = run_predict(onnx_bundle, image_list, tmp, [f"output={tmp}/preds.jsonl", "batch_size=64"])
    assert summary["count"] == N_IMAGES + 4 and summary["failed"] == 4
    lines = (tmp / "preds.jsonl").read_text().splitlines()
    return records_by_input([json.loads(line) for line in lines])


def test_ray_records_equal_the_local_runner(
    ray_address: str, onnx_bundle: Path, image_list: Path, local_records: dict, tmp_path: Path
) -> None:
    """Parquet shards here; the CLI test below reads JSONL ones."""
    out = tmp_path / "shards"
    overrides = [f"output={out}", "runner=ray", "ray.format=parquet", "ray.batch_size=48", "ray.concurrency=2"]
    summary = run_predict(onnx_bundle, image_list, tmp_path, overrides)
    assert summary["runner"] == "ray" and summary["count"] == N_IMAGES + 4 and summary["failed"] == 4
    rows = ray.data.read_parquet(str(out)).take_all()
    assert len(rows) == N_IMAGES + 4  # one record per input, nothing dropped
    assert len(list(out.iterdir())) > 1  # sharded
    assert_same_records(local_records, records_by_input(rows))
    errors = {Path(k).name: v["error"] for k, v in records_by_input(rows).items() if "error" in v}
    assert set(errors) == {"corrupt.png", "empty.png", "missing.png", "gone.png"}
    assert errors["missing.png"] == errors["gone.png"] == "file not found"


def test_ray_refuses_a_non_empty_output_folder(onnx_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.md").write_text("keep me")
    listing = tmp_path / "one.txt"
    listing.write_text("missing.png\n")
    with pytest.raises(UserError, match="not empty"):
        run_predict(onnx_bundle, listing, tmp_path, [f"output={tmp_path}/out", "runner=ray"])
    with pytest.raises(UserError, match="other files"):
        run_predict(onnx_bundle, listing, tmp_path, [f"output={tmp_path}/out", "runner=ray", "ray.overwrite=true"])
    assert (tmp_path / "out" / "notes.md").read_text() == "keep me"


def test_cli_joins_the_running_cluster_and_writes_summary_beside_output(
    ray_address: str, onnx_bundle: Path, image_list: Path, local_records: dict, tmp_path: Path
) -> None:
    out = tmp_path / "results" / "shards"
    proc = run_cli(
        "predict",
        f"bundle={onnx_bundle}",
        f"inputs={image_list}",
        "topk=3",
        "runner=ray",
        f"ray.address={ray_address}",
        f"output={out}",
        "fail_on_error=false",
        log_dir=tmp_path / "logs",
    )
    assert proc.stdout == ""  # the records are in the shards
    assert f"predicted {N_IMAGES + 4} input(s), 4 failed" in proc.stderr and "ray runner" in proc.stderr
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["count"] == N_IMAGES + 4 and summary["output"] == str(out)
    assert not (tmp_path / "logs").exists()  # quiet: no run folder
    rows = [json.loads(line) for shard in sorted(out.iterdir()) for line in shard.read_text().splitlines()]
    assert_same_records(local_records, records_by_input(rows))


def test_cli_usage_errors_before_starting_ray(onnx_bundle: Path, tmp_path: Path) -> None:
    cases = {
        "output=DIR": ["runner=ray"],
        "ray.format=csv": ["runner=ray", f"output={tmp_path}/o", "ray.format=csv"],
        "runner=spark": ["runner=spark"],
    }
    for message, overrides in cases.items():
        args = [f"bundle={onnx_bundle}", f"inputs={tmp_path}", *overrides]
        (tmp_path / "a.png").write_bytes(b"x")
        proc = run_cli("predict", *args, log_dir=tmp_path / "logs", check=False, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-500:]


def test_the_summary_names_the_engine_the_actors_loaded(
    ray_address: str, digits_model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bundle whose chosen engine cannot load here (a kind this install does not know): with no
    `backend=`, the engine is resolved on the driver, every actor loads exactly it, and the summary names it."""
    from project.deploy.backends import BACKENDS

    class Foreign(EagerBackend):
        kind = "foreign_test"

    net, data = digits_model
    eager = EagerBackend()
    with monkeypatch.context() as m:  # known where the bundle was written, unknown here and on the actors
        m.setitem(BACKENDS, Foreign.kind, Foreign)
        foreign = Foreign()
        engines = [(foreign, foreign.build(net, torch.zeros(1, 1, 8, 8), 8)), (eager, eager.build(net, None, 0))]
        bundle = write_bundle(tmp_path / "deploy", net, NET_CONFIG, data.input_spec(), engines)
    listing = tmp_path / "one.txt"
    save_pngs(tmp_path / "png", *digit_samples(data, 4))
    listing.write_text("".join(f"{p}\n" for p in sorted((tmp_path / "png").rglob("*.png"))))
    summary = run_predict(bundle, listing, tmp_path, [f"output={tmp_path}/out", "runner=ray", "ray.concurrency=1"])
    assert summary["backend"] == "eager" and summary["count"] == 4 and summary["failed"] == 0


def test_an_engine_that_runs_code_loads_only_when_trusted(digits_model, tmp_path: Path, monkeypatch) -> None:
    """`predict` passes trust_native_code on; runner=ray refuses a named engine that runs code in the driver,
    in one line, before any actor could load it."""
    from tests.test_predictor import native_bundle

    bundle, marker = native_bundle(digits_model, tmp_path, monkeypatch)
    listing = tmp_path / "one.txt"
    listing.write_text("missing.png\n")
    with pytest.raises(UserError, match=r"^not loading engine native_test: .*trust_native_code=true"):
        run_predict(bundle, listing, tmp_path, ["runner=ray", "backend=native_test", f"output={tmp_path}/out"])
    run_predict(bundle, listing, tmp_path, [f"output={tmp_path}/a.jsonl"])
    assert not marker.exists()  # the local runner skipped it too
    run_predict(bundle, listing, tmp_path, [f"output={tmp_path}/b.jsonl", "trust_native_code=true"])
    assert marker.exists()
