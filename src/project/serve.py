"""`python -m project.serve bundle=PATH [port=8000] [host=127.0.0.1] [max_batch_size=16]`

An HTTP server (LitServe) answering `POST /predict` with the same JSON as `Predictor.predict`, with
dynamic batching. Binds 127.0.0.1 unless `host=` says otherwise. See conf/serve.yaml for every option.

    curl -F image=@digit.png http://127.0.0.1:8000/predict
    curl -H 'Content-Type: application/json' -d '{"image": "'$(base64 -w0 digit.png)'", "topk": 3}' \\
         http://127.0.0.1:8000/predict
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

from project.config import UserError, config_dir, exits_on_user_error

log = logging.getLogger(__name__)


def build_server(cfg: DictConfig) -> Any:
    """Check the bundle here (one clear line if it is wrong), then build the LitServer around it."""
    if not cfg.get("bundle"):
        raise UserError("bundle is required: pass bundle=PATH/TO/<run>/deploy")
    if int(cfg.max_batch_size) < 1 or float(cfg.batch_timeout) < 0:
        raise UserError("max_batch_size must be ≥ 1 and batch_timeout ≥ 0")
    if not 1 <= int(cfg.topk) <= int(cfg.max_topk):
        raise UserError(f"topk={cfg.topk} must be between 1 and max_topk={cfg.max_topk}")

    import litserve as ls

    from project.deploy.bundle import Bundle
    from project.inference.predictor import find_bundle
    from project.inference.preprocess import Preprocessor
    from project.inference.server import API_PATH, ClassifierAPI, ImageRequestMiddleware

    bundle = Bundle.open(find_bundle(cfg.bundle))  # verifies the manifest before any worker starts
    Preprocessor.from_spec(bundle.preprocessing)
    api = ClassifierAPI(
        bundle=str(bundle.directory),
        backend=cfg.get("backend"),
        max_batch_size=int(cfg.max_batch_size),
        batch_timeout=float(cfg.batch_timeout),
        max_pixels=int(cfg.max_pixels),
        threads=cfg.get("threads"),
    )
    middleware = {
        "api_path": API_PATH,
        "max_bytes": int(float(cfg.max_payload_mb) * (1 << 20)),
        "default_topk": int(cfg.topk),
        "max_topk": int(cfg.max_topk),
    }
    return ls.LitServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=int(cfg.workers),
        timeout=float(cfg.timeout),
        middlewares=[(ImageRequestMiddleware, middleware)],
        model_metadata={
            "bundle": str(bundle.directory),
            "engine": bundle.info.get("chosen", "eager"),
            "classes": bundle.class_names,
            "input": {k: bundle.preprocessing.get(k) for k in ("channels", "height", "width")},
            "max_batch_size": int(cfg.max_batch_size),
            "batch_timeout": float(cfg.batch_timeout),
        },
    )


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="serve")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    server = build_server(cfg)
    log.info("serving %s on http://%s:%s%s", cfg.bundle, cfg.host, cfg.port, "/predict")
    server.run(host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level), generate_client_file=False)


if __name__ == "__main__":
    main()
