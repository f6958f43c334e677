"""`python -m project.export bundle=PATH format=triton out=DIR`

Turns a deploy bundle into a Triton Inference Server model repository (project.triton.repository): the
bundle's engine under Triton's own backend (ONNX → onnxruntime, OpenVINO IR → openvino, TensorRT → a
plan for the tensorrt backend; anything else is exported to ONNX from the weights, and it says so), plus a
preprocessing model and an ensemble that take encoded images. See conf/export.yaml for every option.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from project.config import UserError, config_dir, dataclass_from_mapping, exits_on_user_error, plain

FORMATS = ("triton",)


def export(cfg: DictConfig) -> dict[str, Any]:
    """Check the options, open (and verify) the bundle, write the repository; return what was written."""
    if not cfg.get("bundle"):
        raise UserError("bundle is required: pass bundle=PATH/TO/<run>/deploy")
    if cfg.get("format") not in FORMATS:
        raise UserError(f"format={cfg.get('format')} is not known: use format=triton")
    if not cfg.get("out"):
        raise UserError("out is required: pass out=DIR (the Triton model repository folder)")
    from project.triton.repository import KINDS, TritonSettings, write_repository

    try:
        settings = dataclass_from_mapping(TritonSettings, plain(cfg.get("triton")), "triton")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if settings.instance_kind not in ("auto", *KINDS):
        raise UserError(f"triton.instance_kind={settings.instance_kind}: use auto, cpu or gpu")

    from project.deploy.bundle import Bundle
    from project.inference.predictor import find_bundle

    bundle = Bundle.open(find_bundle(cfg.bundle))
    return write_repository(bundle, cfg.out, settings)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
@exits_on_user_error
def main(cfg: DictConfig) -> None:
    result = export(cfg)
    if result["note"]:
        print(f"note: {result['note']}", file=sys.stderr)
    models = ", ".join(result["models"].values())
    print(
        f"wrote Triton model repository {result['repository']}: {models} ({result['triton_backend']} backend, "
        f"max_batch_size {result['max_batch_size']}, preferred batches {result['preferred'] or 'none'})\n"
        f"serve it: tritonserver --model-repository={result['repository']} (see README: Inference beyond one process)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    from project.command_line import check_command_line

    check_command_line("export")  # a mistake in the command line: one line, exit 2, before Hydra starts
    main()
