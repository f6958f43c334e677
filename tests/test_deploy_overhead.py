"""The engine wrappers add nothing a bare library session would not do (issue 13 item 8), and reports
keep the bare-library figure beside each engine. Deterministic checks only: no timed assertions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from project.deploy.backends import parse_backend
from project.deploy.backends.onnxruntime import input_array, session_options
from project.deploy.pipeline import run_pipeline
from project.deploy.report import markdown
from project.deploy.results import BenchmarkReport
from project.deploy.settings import DeploySettings
from project.deploy.synthetic import synthetic_parity_data
from project.models.nets import DigitsCNN


def test_onnxruntime_spins_within_a_run_only() -> None:
    options = session_options(threads=2)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    # spinning between the operators of one run stays on (ORT's default): the old "0" cost ~1.4× at batch 1
    assert not has_entry(options, "session.intra_op.allow_spinning")
    assert options.intra_op_num_threads == 2
    assert not has_entry(session_options(spin=True), "session.force_spinning_stop")


def has_entry(options, key: str) -> bool:
    try:
        options.get_session_config_entry(key)
    except RuntimeError:  # "SessionOptions does not have configuration with key ..."
        return False
    return True


def test_onnxruntime_input_is_the_callers_memory() -> None:
    x = torch.randn(1, 1, 8, 8)
    array = input_array(x)
    assert np.shares_memory(array, x.numpy()) and array.dtype == np.float32 and array.flags.c_contiguous


def test_report_shows_the_bare_library_beside_each_engine(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = DigitsCNN(width=8).eval()
    data = synthetic_parity_data(net, (1, 8, 8), 10, count=64)
    settings = DeploySettings.from_config(
        {
            "backends": ["eager", "eager_channels_last", "onnxruntime"],
            "batch_sizes": [1, 8],
            "bare": True,
            "timing": {"warmup_iters": 1, "min_iters": 2, "min_duration_s": 0.0},
            "bundle": False,
            "plot": False,
            "strict": True,
        }
    )
    spec = {"channels": 1, "height": 8, "width": 8}
    run_pipeline(net, {"_target_": "DigitsCNN"}, spec, settings, tmp_path, data=data)
    report = BenchmarkReport.read(tmp_path / "benchmark.json")  # as written: the figures survive the file
    assert set(report.engines) == {"eager", "eager_channels_last", "onnxruntime"}  # bare sessions are no engines
    for name in ("eager", "onnxruntime"):
        for bs in (1, 8):
            assert report.engines[name].bare_point(bs).iterations >= 2
    assert report.engines["eager_channels_last"].bare_point(1) is None  # a project recipe: no library default
    assert report.chosen in report.engines
    table = markdown(report)
    assert "bare library p50" in table and "wrapper overhead" in table
    bare = report.engines["onnxruntime"].bare_point(1).p50_ms
    assert f"{bare:,.3f}" in table


def test_bare_sessions_are_the_libraries_own(tmp_path: Path) -> None:
    net = DigitsCNN(width=8).eval()
    backend = parse_backend("onnxruntime")
    engine = backend.build(net, torch.randn(2, 1, 8, 8), 8, threads=1)
    backend.save(engine, tmp_path)
    bare = backend.bare(tmp_path, net, threads=1)
    x = torch.randn(3, 1, 8, 8)
    assert isinstance(bare(x), np.ndarray)  # what onnxruntime itself returns: nothing of ours around it
    assert torch.allclose(torch.from_numpy(bare(x)), engine(x))
