"""`python -m project.serve bundle=PATH [port=8000] [host=127.0.0.1] [max_batch_size=16]`

An HTTP server (LitServe) answering `POST /predict` with the same JSON as `Predictor.predict`, and the
Open Inference Protocol (KServe V2: `/v2/models/<name>/infer`, health, metadata), with dynamic batching.
`GET /` is a page to try it in a browser: upload images, read the model card (`project.inference.page`).
Binds 127.0.0.1 unless `host=` says otherwise (then `api_key` or `allow_unauthenticated=true` is required).
SIGTERM/SIGINT drain the requests in flight, stop every worker and exit 0. See conf/serve.yaml.

    curl -F image=@digit.png http://127.0.0.1:8000/predict
    curl -H 'Content-Type: application/json' -d '{"image": "'$(base64 -w0 digit.png)'", "topk": 3}' \\
         http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from project.config import UserError, config_dir, exits_on_user_error

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1",)
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe can bind
DEFAULT_MAX_BATCH = 16  # requests per dynamic batch unless max_batch_size says otherwise
DEFAULT_ENGINE_BATCH = 64  # images per engine call at least (a V2 request may carry several)


def check_settings(cfg: DictConfig) -> None:
    """Every setting that can be wrong, one clear line each, before anything starts."""
    if not cfg.get("bundle"):
        raise UserError("bundle is required: pass bundle=PATH/TO/<run>/deploy")
    if (cfg.max_batch_size is not None and int(cfg.max_batch_size) < 1) or float(cfg.batch_timeout) < 0:
        raise UserError("max_batch_size must be ≥ 1 and batch_timeout ≥ 0")
    if not 1 <= int(cfg.topk) <= int(cfg.max_topk):
        raise UserError(f"topk={cfg.topk} must be between 1 and max_topk={cfg.max_topk}")
    limits = ("timeout", "body_timeout", "shutdown_timeout", "max_concurrent")
    if any(float(cfg[key]) <= 0 for key in limits):
        raise UserError(f"{', '.join(limits)} must all be > 0")
    if str(cfg.host) not in HOSTS:
        raise UserError(f"host={cfg.host} is not supported: use 127.0.0.1 (this machine), 0.0.0.0 or ::")
    if str(cfg.host) not in LOOPBACK and not cfg.get("api_key") and not cfg.get("allow_unauthenticated"):
        raise UserError(
            f"host={cfg.host} opens the server to the network: set serve api_key=... (or the SERVE_API_KEY "
            "environment variable), or allow_unauthenticated=true if something in front of it authenticates"
        )


def batch_sizes(bundle: Any, engine: str, max_batch_size: int | None) -> tuple[int, int]:
    """(requests per dynamic batch, images per engine call), both within the largest batch the bundle's
    engine was verified at: `max_batch_size` above it is refused; None means 16, or that limit if lower."""
    limit = bundle.batch_limit(engine)
    requests = int(max_batch_size) if max_batch_size is not None else min(DEFAULT_MAX_BATCH, limit or DEFAULT_MAX_BATCH)
    bundle.check_batch_size(requests, engine, "max_batch_size")
    return requests, max(requests, min(DEFAULT_ENGINE_BATCH, limit or DEFAULT_ENGINE_BATCH))


def build_server(cfg: DictConfig) -> Any:
    """Check the settings and the bundle here (one clear line if wrong), then build the server around it."""
    check_settings(cfg)

    from litserve.utils import WorkerSetupStatus

    from project.deploy.bundle import Bundle
    from project.inference.guard import OPEN_PATHS, RequestGuard
    from project.inference.page import PAGE_PATHS, add_page_routes, model_card
    from project.inference.predictor import engine_for_workers, find_bundle
    from project.inference.preprocess import Preprocessor
    from project.inference.request_parsing import API_PATH, ImageRequestMiddleware
    from project.inference.server import ClassifierAPI
    from project.inference.supervisor import SupervisedServer
    from project.inference.v2_protocol import add_v2_routes, model_metadata

    bundle = Bundle.open(find_bundle(cfg.bundle))  # verifies the manifest before any worker starts
    Preprocessor.from_spec(bundle.preprocessing)
    model_name = str(cfg.get("model_name") or bundle.model_name)
    trust_native_code = cfg.get("trust_native_code") is True
    # resolved here (one line if wrong, not a worker that dies): /info names what the workers load
    engine = engine_for_workers(bundle, cfg.get("backend"), trust_native_code, cfg.get("threads"))
    max_batch_size, engine_batch_size = batch_sizes(bundle, engine, cfg.get("max_batch_size"))
    chw = tuple(int(bundle.preprocessing[k]) for k in ("channels", "height", "width"))
    api = ClassifierAPI(
        bundle=str(bundle.directory),
        backend=engine,
        max_batch_size=max_batch_size,
        engine_batch_size=engine_batch_size,
        batch_timeout=float(cfg.batch_timeout),
        max_pixels=int(cfg.max_pixels),
        threads=cfg.get("threads"),
        model_name=model_name,
        trust_native_code=trust_native_code,
    )
    requests = {
        "api_path": API_PATH,
        "max_bytes": int(float(cfg.max_payload_mb) * (1 << 20)),
        "default_topk": int(cfg.topk),
        "max_topk": int(cfg.max_topk),
        "model_name": model_name,
        "chw": chw,
    }
    guard = {
        "api_key": str(cfg.api_key) if cfg.get("api_key") else None,
        "max_concurrent": int(cfg.max_concurrent),
        "retry_after": int(cfg.retry_after),
        "timeout": float(cfg.timeout),
        "body_timeout": float(cfg.body_timeout),
        "open_paths": OPEN_PATHS + PAGE_PATHS,  # the page itself; it asks for the key and sends it
    }
    server = SupervisedServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=int(cfg.workers),
        timeout=float(cfg.timeout),
        shutdown_timeout=float(cfg.shutdown_timeout),
        middlewares=[(ImageRequestMiddleware, requests), (RequestGuard, guard)],  # the last one is outermost
        model_metadata={
            "bundle": str(bundle.directory),
            "engine": engine,
            "model_name": model_name,
            "classes": bundle.class_names,
            "input": {k: bundle.preprocessing.get(k) for k in ("channels", "height", "width")},
            "max_batch_size": max_batch_size,
            "verified_batch_sizes": bundle.verified_batch_sizes,
            "batch_timeout": float(cfg.batch_timeout),
        },
    )
    metadata = model_metadata(model_name, bundle.preprocessing, len(bundle.class_names), engine)

    def ready() -> bool:
        status = getattr(server, "workers_setup_status", None) or {}
        return bool(status) and all(v == WorkerSetupStatus.READY for v in status.values())

    add_v2_routes(server.app, metadata, ready)
    add_page_routes(server.app, model_card(bundle, engine, int(cfg.topk), int(cfg.max_topk)), bundle.directory)
    return server


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="serve")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    server = build_server(cfg)
    log.info("serving %s on http://%s:%s (/predict, /v2/models/...)", cfg.bundle, cfg.host, cfg.port)
    code = server.run(host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level), generate_client_file=False)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("serve")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
