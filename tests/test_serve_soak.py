"""`benchmarks/serve_load.py --soak`, bounded (300 requests, 8 clients, 127.0.0.1): with 10 % malformed
requests (corrupt images, wrong content types, oversized and stalled bodies, bad JSON) the server answers no
5xx, every good request correctly (checked against `Predictor`), every bad one with its 4xx, and its process
tree's memory stays flat after warm-up. `make soak` runs the full 10,000-request version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bounded_soak_passes(digits_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--soak", "--requests", "300"]
    cmd += ["--clients", "8", "--bundle", str(digits_bundle), "--json", str(out), "--set", "threads=1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["passed"] and result["5xx"] == 0 and result["wrong_answer"] == 0
    assert result["sent"]["good"] == 270 and all(n == 6 for kind, n in result["sent"].items() if kind != "good")
    assert result["rss_growth_pct"] < 10 and result["p99_ms"] >= result["p50_ms"] > 0
    assert "| 5xx | 0 | 0 |" in proc.stdout and "soak PASSED" in proc.stdout
