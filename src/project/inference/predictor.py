"""`Predictor`: a deploy bundle → labels for images, in three lines of application code.

    from project import Predictor
    predictor = Predictor.load("logs/train/runs/<run>/deploy")
    predictor.predict(["a.png", "b.jpg"], topk=3)   # → [Prediction(label=..., index=..., score=..., topk=[...])]

The engine is whichever the bundle chose (falling back to the next one, then eager fp32, when it cannot
load here), or exactly the one named by `backend=` (refused when the bundle lacks it or it cannot load);
`predictor.backend` says which. Batches never exceed the largest batch size the bundle's engines were
verified at. The preprocessing comes from the bundle, so the application never re-implements it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from project.deploy.backends import Engine
from project.deploy.bundle import MANIFEST, Bundle, BundleError
from project.inference.preprocess import DEFAULT_MAX_PIXELS, InvalidInput, Preprocessor

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64  # images per engine call unless asked otherwise (lowered to the bundle's verified limit)


@dataclass
class Prediction:
    """The answer for one input: best label, its class index and probability, and the top-k list."""

    label: str
    index: int
    score: float
    topk: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: the same shape the CLI writes and the server returns."""
        return asdict(self)


def _is_single(inputs: Any) -> bool:
    """One image (as opposed to a collection of them)."""
    if isinstance(inputs, str | os.PathLike | bytes | bytearray | memoryview | Image.Image):
        return True
    if isinstance(inputs, np.ndarray | torch.Tensor):
        return inputs.ndim <= 3
    # a mapping is not a list of images (its keys are not inputs): let the preprocessor refuse it
    return hasattr(inputs, "read") or isinstance(inputs, Mapping)


def as_items(inputs: Any) -> list[Any]:
    """An input or a collection of inputs → a list of single inputs; an N×… array/tensor is N inputs."""
    if _is_single(inputs):
        return [inputs]
    if isinstance(inputs, np.ndarray | torch.Tensor):
        return list(inputs)  # ndim 4: a batch of images
    if isinstance(inputs, Iterable):
        return list(inputs)
    return [inputs]  # something unknown: let the preprocessor say what is wrong with it


def find_bundle(path: str | Path) -> Path:
    """A bundle folder, or a run folder that holds one in `deploy/`."""
    path = Path(path)
    if not (path / MANIFEST).is_file() and (path / "deploy" / MANIFEST).is_file():
        return path / "deploy"
    return path


def engine_for_workers(bundle: Bundle, backend: str | None, trust_native_code: bool, threads: int | None = None) -> str:
    """The engine other processes (server workers, Ray actors) are told to load, exactly: a named one,
    checked here in one line; else the one the fallback order loads on this host (loaded once here to
    find out), so what `/info` or a summary names is the engine that answers."""
    if backend:
        bundle.check_engine_name(str(backend), trust_native_code)
        return str(backend)
    return bundle.engine(threads=threads, trust_native_code=trust_native_code)[0]


class Predictor:
    """Predictions from an engine plus the preprocessing it was trained with."""

    def __init__(
        self,
        engine: Engine,
        preprocessor: Preprocessor,
        class_names: Sequence[str] = (),
        backend: str = "eager",
        batch_size: int = 64,
        bundle: Bundle | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.engine = engine
        self.preprocessor = preprocessor
        self.class_names = list(class_names)
        self.backend = backend
        self.batch_size = batch_size
        self.bundle = bundle

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        backend: str | None = None,
        batch_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        trust_native_code: bool = False,
    ) -> Predictor:
        """Open and verify a bundle (`<run>/deploy`, or the run folder itself) and load its engine.

        `backend` picks one of the bundle's engines by name, or `eager` for the fp32 weights (default: the
        one the deploy step chose). `batch_size`: images per engine call, at most the largest batch the
        bundle was verified at (None: 64, or that limit if lower). `threads` sizes the engine's own thread
        pool (ONNX Runtime, OpenVINO; eager PyTorch follows `torch.set_num_threads`). `trust_native_code`:
        also load engines whose files run code when loaded (an inductor package's compiled library, a
        TensorRT program torch unpickles); without it they are skipped, or refused by name, since whoever
        can edit a bundle can replace them. Raises `BundleError` (a `UserError`) when the bundle is
        missing, incomplete or changed, lacks `backend` or cannot load it here (or it runs code and is not
        trusted), or when `batch_size` is above its verified range.
        """
        bundle = Bundle.open(find_bundle(bundle_dir))
        try:
            preprocessor = Preprocessor.from_spec(bundle.preprocessing, max_pixels=max_pixels)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{bundle.directory}/preprocessing.json is not usable: {exc}") from None
        name, engine = bundle.engine(backend, threads=threads, trust_native_code=trust_native_code)
        if batch_size is None:
            batch_size = min(DEFAULT_BATCH_SIZE, bundle.batch_limit(name) or DEFAULT_BATCH_SIZE)
        bundle.check_batch_size(batch_size, name, "batch_size")
        log.info("loaded %s with the %s engine", bundle.directory, name)
        return cls(engine, preprocessor, bundle.class_names, backend=name, batch_size=batch_size, bundle=bundle)

    # --- the API ------------------------------------------------------------------------------
    def predict(self, inputs: Any, topk: int = 1) -> list[Prediction]:
        """One `Prediction` per input, in order. Raises `InvalidInput` (before running the model) if any
        input is not a usable image; `predict_each` reports bad inputs one by one instead."""
        items = as_items(inputs)
        images = [self.preprocessor.to_uint8(item, self._name(item, i)) for i, item in enumerate(items)]
        out: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            out += self.predict_uint8(torch.stack(images[start : start + self.batch_size]), topk)
        return out

    def predict_each(self, inputs: Iterable[Any], topk: int = 1) -> Iterator[Prediction | InvalidInput]:
        """Per input, in order: its `Prediction`, or the `InvalidInput` that says why it could not be
        read. Streams in batches of `batch_size`, so a long list never sits in memory at once."""
        pending: list[tuple[Any, int]] = []

        def flush() -> Iterator[Prediction | InvalidInput]:
            decoded: list[torch.Tensor | InvalidInput] = []
            for item, i in pending:
                try:
                    decoded.append(self.preprocessor.to_uint8(item, self._name(item, i)))
                except InvalidInput as exc:
                    decoded.append(exc)
            good = [x for x in decoded if isinstance(x, torch.Tensor)]
            results = iter(self.predict_uint8(torch.stack(good), topk) if good else [])
            for x in decoded:
                yield x if isinstance(x, InvalidInput) else next(results)
            pending.clear()

        items = [inputs] if _is_single(inputs) else inputs
        for i, item in enumerate(items):
            pending.append((item, i))
            if len(pending) == self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def preprocess(self, inputs: Any) -> torch.Tensor:
        """The normalised float32 N×C×H×W batch the engine is given for `inputs`."""
        return self.preprocessor(as_items(inputs))

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The engine's float32 logits for a normalised batch, run `batch_size` at a time."""
        chunks = [self.engine(batch[i : i + self.batch_size]) for i in range(0, len(batch), self.batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, len(self.class_names))

    def predict_uint8(self, images: torch.Tensor, topk: int | Sequence[int] = 1) -> list[Prediction]:
        """Predictions for an already preprocessed uint8 N×C×H×W batch; `topk` may differ per image."""
        with torch.inference_mode():
            logits = self.logits(self.preprocessor.normalize(images))
        return self.decode(logits, topk)

    def decode(self, logits: torch.Tensor, topk: int | Sequence[int] = 1) -> list[Prediction]:
        """Logits → `Prediction`s with softmax probabilities as scores."""
        n, num_classes = logits.shape
        k_per_row = [topk] * n if isinstance(topk, int) else list(topk)
        if len(k_per_row) != n or any(k < 1 for k in k_per_row):
            raise ValueError(f"topk must be at least 1 (one per input), got {topk}")
        probs = torch.softmax(logits.float(), dim=1)
        scores, indices = probs.topk(min(max(k_per_row), num_classes), dim=1)
        out = []
        for row_scores, row_indices, k in zip(scores.tolist(), indices.tolist(), k_per_row, strict=True):
            top = [
                {"label": self.label(j), "index": j, "score": s}
                for s, j in zip(row_scores[:k], row_indices[:k], strict=True)
            ]
            out.append(Prediction(label=top[0]["label"], index=top[0]["index"], score=top[0]["score"], topk=top))
        return out

    def label(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else str(index)

    @staticmethod
    def _name(item: Any, position: int) -> str:
        return str(item) if isinstance(item, str | os.PathLike) else f"input {position}"

    def __repr__(self) -> str:
        where = self.bundle.directory if self.bundle is not None else "(in memory)"
        return f"Predictor({where}, backend={self.backend!r}, classes={len(self.class_names)})"
