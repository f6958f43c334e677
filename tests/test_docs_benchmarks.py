"""The benchmarks page is rendered from recorded benchmark.json files, each with its provenance."""

import importlib.util
import json
import shutil
from pathlib import Path

from project import docs_benchmarks

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / docs_benchmarks.DATA


def test_the_committed_page_is_the_rendering_of_the_records():
    assert (REPO / docs_benchmarks.PAGE).read_text() == docs_benchmarks.render(DATA), (
        "run: python -m project.docs_benchmarks"
    )


def test_every_record_says_how_where_and_when_it_was_measured():
    records = docs_benchmarks.records(DATA)
    assert records, "no benchmark.json recorded under docs/data/"
    for name, entry in records.items():
        assert entry["command"].startswith("python -m project."), name
        module = entry["command"].split()[2]
        assert importlib.util.find_spec(module) is not None, f"{name}: {module} does not exist"
        assert entry["commit"] and entry["date"] and entry["cpu_model"], name
        assert isinstance(entry["cpu_flags"], list), name
        assert entry["benchmark"]["backends"] and entry["benchmark"]["machine"]["cpu"], name


def test_a_changed_figure_changes_the_page(tmp_path):
    shutil.copytree(DATA, tmp_path / "data")
    path = next((tmp_path / "data").glob("*.json"))
    entry = json.loads(path.read_text())
    eager = entry["benchmark"]["backends"]["eager"]
    first = str(entry["benchmark"]["settings"]["batch_sizes"][0])
    eager["batches"][first]["latency_ms"]["p50"] = 123.456
    path.write_text(json.dumps(entry))
    page = docs_benchmarks.render(tmp_path / "data")
    assert "| eager | ok | 100.00% / +0.00 | 123.456 |" in page
    assert page != docs_benchmarks.render(DATA)


def test_cpu_flags_come_from_cpuinfo():
    cpuinfo = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 fma amx_tile sse4_2\n"
    assert docs_benchmarks.cpu_model_and_flags(cpuinfo) == ("Some CPU", ["avx2", "fma", "amx_tile"])
