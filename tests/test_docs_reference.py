"""The configuration reference (docs/reference/config.md) is generated from conf/ and documents every key."""

from pathlib import Path

from project import docs_reference

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_reference_is_the_generated_one():
    committed = (REPO / docs_reference.PAGE).read_text()
    assert committed == docs_reference.render(REPO / "conf"), "run: python -m project.docs_reference"


def test_every_key_in_conf_has_a_comment():
    assert docs_reference.undocumented(REPO / "conf") == []


def test_a_key_without_a_comment_is_reported(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text(
        "# my data\n_target_: x.Y\n# the batch\nbatch_size: 8\nworkers: 2\naugment:\n  flip: true  # flip half\n"
    )
    assert docs_reference.undocumented(tmp_path) == ["conf/data/mine.yaml:5 workers"]
    page = docs_reference.render(tmp_path)
    assert "| `batch_size` | `8` | the batch |" in page
    assert "| `augment.flip` | `true` | flip half |" in page


def test_an_override_inherits_the_comment_of_the_key_it_sets(tmp_path):
    for folder in ("data", "experiment"):
        (tmp_path / folder).mkdir()
    (tmp_path / "data" / "a.yaml").write_text("# rows per step\nbatch_size: 8\n")
    (tmp_path / "data" / "b.yaml").write_text("batch_size: 16\n")
    (tmp_path / "experiment" / "x.yaml").write_text("# @package _global_\ndata:\n  batch_size: 32\n")
    assert docs_reference.undocumented(tmp_path) == []
    assert "| `data.batch_size` | `32` | rows per step |" in docs_reference.render(tmp_path)


def test_the_check_command_fails_on_a_stale_page(tmp_path):
    stale = tmp_path / "config.md"
    stale.write_text("# old\n")
    assert docs_reference.main(["--check", "--out", str(stale)]) == 1
