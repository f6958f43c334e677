"""Lightning + Hydra image classification: train, compile to an inference engine, verify, deploy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Predictor", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from project.inference.predictor import Predictor


def __getattr__(name: str) -> Any:
    # Lazy so `import project` stays cheap and does not pull in the inference stack.
    if name == "Predictor":
        from project.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'project' has no attribute {name!r}")
