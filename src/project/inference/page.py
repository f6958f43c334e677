"""The page `GET /` serves: upload images, see their top-k labels; the model card; the bundle's pictures.

Plain HTML, CSS and JavaScript shipped in this package (`page_files/`), no build step and nothing from elsewhere.
The page's three files are open even when an API key is set (they hold nothing about the model): the page
asks for the key and sends it as `X-API-Key` on every other call. `GET /card` (the model card as JSON) and
`GET /card/pictures/<name>` (the bundle's `pictures/`) need the key like `/predict` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from project.deploy.bundle import Bundle

PAGE_DIR = Path(__file__).with_name("page_files")
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/page/style.css": ("style.css", "text/css; charset=utf-8"),
}
PAGE_PATHS = tuple(PAGE_FILES)  # open without the API key
# the page runs only its own script and style, and shows only the server's pictures and the user's uploads
POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
PICTURES = {  # what the page shows, in this order, when the bundle carries it
    "benchmark.png": "Benchmark: throughput and speedup per engine",
    "samples.png": "Data card: sample images per class",
    "class_counts.png": "Data card: images per class and split",
}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def model_card(bundle: Bundle, engine: str, topk: int, max_topk: int) -> dict[str, Any]:
    """What the page's model card shows: classes, the serving engine and its precision, its test accuracy
    and parity against eager fp32, latency and throughput from `benchmark.json`, and the pictures."""
    report = bundle.benchmark
    result = report.engines.get(engine) if report is not None else None
    parity = result.parity if result is not None else None
    points = result.points if result is not None else {}
    small, large = (min(points), max(points)) if points else (None, None)
    pictures_dir = bundle.directory / "pictures"
    return {
        "model_name": bundle.model_name,
        "classes": list(bundle.class_names),
        "input": {k: bundle.preprocessing.get(k) for k in ("channels", "height", "width")},
        "engine": engine,
        "chosen": bundle.info.get("chosen"),
        "chosen_reason": report.chosen_reason if report is not None else None,
        "precision": result.precision if result is not None else None,
        "test_accuracy": _number(parity.acc) if parity is not None else None,
        "reference_accuracy": _number(parity.reference_acc) if parity is not None else None,
        "parity": None
        if parity is None
        else {
            "passed": bool(parity.passed),
            "samples": parity.samples,
            "top1_agreement": _number(parity.top1_agreement),
            "max_abs_diff": _number(parity.max_abs_diff),
            "data": parity.data,
            "reason": parity.reason,
        },
        "latency_ms": None if small is None else {"batch_size": small, "p50": _number(points[small].p50_ms)},
        "throughput": None
        if large is None
        else {"batch_size": large, "images_per_s": _number(points[large].images_per_s)},
        "benchmark": report is not None,
        "pictures": [
            {"name": name, "title": title, "url": f"/card/pictures/{name}"}
            for name, title in PICTURES.items()
            if (pictures_dir / name).is_file()
        ],
        "missing_pictures": [name for name in PICTURES if not (pictures_dir / name).is_file()],
        "topk": topk,
        "max_topk": max_topk,
    }


def add_page_routes(app: Any, card: dict[str, Any], bundle_dir: Path) -> None:
    """`/` and its two assets, `/card` and `/card/pictures/<name>` on the server's FastAPI app."""

    def page_file(name: str, media_type: str) -> Any:
        async def route(request: Request) -> Response:
            # no-cache: a page from an older version of the package is never mixed with a newer script
            headers = {"Cache-Control": "no-cache", "Content-Security-Policy": POLICY}
            return FileResponse(PAGE_DIR / name, media_type=media_type, headers=headers)

        return route

    async def card_route(request: Request) -> Response:
        return JSONResponse(card)

    async def picture(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in PICTURES or not (bundle_dir / "pictures" / name).is_file():  # a fixed list: no paths
            return JSONResponse({"detail": f"the bundle has no picture {name!r}"}, status_code=404)
        return FileResponse(bundle_dir / "pictures" / name, media_type="image/png")

    # LitServe's own `GET /` answers "litserve running"; the page takes its place
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/"]
    for path, (name, media_type) in PAGE_FILES.items():
        app.add_api_route(path, page_file(name, media_type), methods=["GET"], include_in_schema=False)
    app.add_api_route("/card", card_route, methods=["GET"])
    app.add_api_route("/card/pictures/{name}", picture, methods=["GET"])
