"""The page `GET /` serves, in a real browser: Debian's chromium, headless, driven by Playwright, against
`python -m project.serve` on 127.0.0.1. Real uploads; the labels shown must be `Predictor`'s. Screenshots
of a phone-sized and a wide window are saved under the test's tmp_path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from project import Predictor
from project.deploy.bundle import Bundle
from project.inference.page import PICTURES
from tests.inference_helpers import build_pipeline_bundle, digit_samples, save_pngs
from tests.serve_helpers import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:  # one line in the summary, not one per test
    pytest.skip(
        "no chromium on this machine (apt-get install chromium): the browser tests need it", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
KEY = "page-test-key"


@pytest.fixture(scope="module")
def page_bundle(digits_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A post-fit bundle with its pictures: the plot drawn, and a data card in the run folder."""
    net, data = digits_model
    out = tmp_path_factory.mktemp("page_run")
    (out / "data_card").mkdir()
    for name, colour in (("samples.png", (40, 90, 200)), ("class_counts.png", (200, 120, 40))):
        Image.new("RGB", (240, 120), colour).save(out / "data_card" / name)
    return build_pipeline_bundle(out, net, data, plot=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(page_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(page_bundle, tmp_path_factory.mktemp("page_serve"), "max_topk=5") as running:
        yield running.url


@pytest.fixture(scope="module")
def images(digits_model, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    pictures, labels = digit_samples(digits_model[1], 3)
    big = [np.kron(p, np.ones((8, 8), dtype=np.uint8)) for p in pictures]  # 64×64: visible thumbnails
    return save_pngs(tmp_path_factory.mktemp("page_images"), np.stack(big), labels)


def open_page(browser, url: str, width: int = 1280, height: int = 800):
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(url)
    return page


def page_errors(page) -> list[str]:
    """Script errors and console errors (a CSP violation among them) as they come."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def wait_for_card(page) -> None:
    page.locator("#subtitle", has_text="served by").wait_for(timeout=10_000)


def upload(page, *files: Path) -> None:
    answered = page.locator(".result:not([data-state=pending])")
    before = answered.count()
    page.set_input_files("#files", [str(f) for f in files])
    sync_api.expect(answered).to_have_count(before + len(files), timeout=20_000)


def wait_for_pictures(page, count: int) -> None:
    """Until `count` pictures have loaded (fetched with the key, shown from blob URLs)."""
    loaded = "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
    for _ in range(100):
        if page.locator("#pictures img").evaluate_all(loaded) == count:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"{count} pictures did not load")


def shown(page, name: str) -> dict:
    item = page.locator(f'.result[data-file="{name}"]').first
    return {
        "state": item.get_attribute("data-state"),
        "labels": item.locator(".label").all_inner_texts(),
        "probs": item.locator(".prob").all_inner_texts(),
        "engine": item.locator(".engine").all_inner_texts(),
        "error": item.locator(".error").all_inner_texts(),
    }


def test_uploads_show_the_predictors_labels_and_the_engine(browser, server: str, page_bundle: Path, images) -> None:
    page = open_page(browser, server)
    errors = page_errors(page)
    wait_for_card(page)
    page.select_option("#topk", "3")
    upload(page, *images)
    predictor = Predictor.load(page_bundle)
    engine = httpx.get(f"{server}/info", timeout=5).json()["model"]["engine"]
    for path in images:
        expected = predictor.predict(path, topk=3)[0].topk
        got = shown(page, path.name)
        assert got["state"] == "done", got
        assert got["labels"] == [e["label"] for e in expected]
        assert got["probs"] == [f"{100 * e['score']:.2f} %" for e in expected]
        assert got["engine"] == [engine]
    # dropped rather than picked: the same request, the same answer
    page.evaluate(
        """async (bytes) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
            document.querySelector("#drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        list(images[0].read_bytes()),
    )
    page.wait_for_selector('.result[data-file="dropped.png"][data-state=done]', timeout=20_000)
    assert shown(page, "dropped.png")["labels"] == shown(page, images[0].name)["labels"]
    assert errors == []


def test_a_bad_file_shows_the_servers_message_and_the_next_upload_works(
    browser, server: str, images, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all" * 10)
    answer = httpx.post(f"{server}/predict", files={"image": ("g.png", garbage.read_bytes())}, timeout=30)
    detail = answer.json()["detail"]
    page = open_page(browser, server)
    wait_for_card(page)
    upload(page, garbage)
    got = shown(page, "garbage.png")
    assert got["state"] == "error" and got["error"] == [f"400: {detail}"] and got["labels"] == []
    upload(page, images[1])
    assert shown(page, images[1].name)["state"] == "done"
    page.screenshot(path=str(tmp_path / "page_bad_file.png"))


def test_model_card_shows_the_benchmark_and_the_bundles_pictures(browser, server: str, page_bundle: Path) -> None:
    page = open_page(browser, server)
    errors = page_errors(page)
    wait_for_card(page)
    card = httpx.get(f"{server}/card", timeout=5).json()
    report = json.loads((page_bundle / "benchmark.json").read_text())
    chosen = report["backends"][report["chosen"]]
    assert card["engine"] == report["chosen"] and card["precision"] == chosen["precision"]
    terms, values = page.locator("#facts dt").all_inner_texts(), page.locator("#facts dd").all_inner_texts()
    facts = dict(zip(terms, values, strict=True))
    assert facts["Engine"].startswith(report["chosen"]) and facts["Precision"] == chosen["precision"]
    assert facts["Test accuracy"].startswith(f"{100 * chosen['parity']['acc']:.2f} %")
    assert facts["Parity vs eager fp32"].startswith("passed")
    assert facts["Latency (p50)"] == f"{chosen['batches']['1']['latency_ms']['p50']:.3f} ms at batch 1"
    assert page.locator("#classes li").all_inner_texts() == Bundle.open(page_bundle).class_names
    wait_for_pictures(page, 3)
    assert page.locator("#pictures figure").evaluate_all("fs => fs.map(f => f.dataset.picture)") == list(PICTURES)
    assert page.locator("#pictures-note").inner_text() == ""
    manifest = json.loads((page_bundle / "manifest.json").read_text())["files"]  # shipped, and checked on load
    assert {f"pictures/{name}" for name in PICTURES} <= set(manifest)
    assert errors == []


@pytest.mark.parametrize(("name", "width", "height"), [("phone", 390, 844), ("wide", 1280, 800)])
def test_layout_fits_a_phone_and_a_wide_window(
    browser, server: str, images, tmp_path: Path, name: str, width: int, height: int
) -> None:
    page = open_page(browser, server, width, height)
    wait_for_card(page)
    upload(page, *images[:2])
    wait_for_pictures(page, 3)
    page.screenshot(path=str(tmp_path / f"page_{name}.png"), full_page=True)
    assert (tmp_path / f"page_{name}.png").stat().st_size > 10_000
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "horizontal overflow"
    upload_box, card_box = page.locator("#try").bounding_box(), page.locator("#card").bounding_box()
    if width < 860:  # one column: the card below the uploads
        assert card_box["y"] >= upload_box["y"] + upload_box["height"]
    else:  # two columns side by side
        assert card_box["x"] >= upload_box["x"] + upload_box["width"] and card_box["y"] == upload_box["y"]


def test_the_page_asks_for_the_api_key_and_sends_it(browser, page_bundle: Path, images, tmp_path: Path) -> None:
    with serving(page_bundle, tmp_path / "keyed", f"api_key={KEY}") as running:
        assert httpx.get(running.url, timeout=5).status_code == 200  # the page itself needs no key
        assert httpx.get(f"{running.url}/card", timeout=5).status_code == 401
        page = open_page(browser, running.url)
        page.wait_for_selector("#key-panel:not([hidden])", timeout=10_000)
        page.fill("#key-input", "wrong")
        page.click("#key-form button")
        page.locator("#key-message", has_text="API key:").wait_for(timeout=10_000)
        expected = httpx.get(f"{running.url}/card", headers={"X-API-Key": "wrong"}, timeout=5).json()["detail"]
        assert page.inner_text("#key-message") == expected
        page.screenshot(path=str(tmp_path / "page_api_key.png"))
        page.fill("#key-input", KEY)
        page.click("#key-form button")
        wait_for_card(page)
        assert page.locator("#key-panel").is_hidden()
        upload(page, images[2])
        got = shown(page, images[2].name)
        assert got["state"] == "done"
        expected = Predictor.load(page_bundle).predict(images[2], topk=3)[0].topk  # the page asks for 3
        assert got["labels"] == [e["label"] for e in expected]
