"""Inputs → prediction records, one per input in order: the one code path the local runner and every Ray
actor of `python -m project.predict` share, so both write the same answer for the same file.

A record is `{"input", "label", "index", "score", "topk"}`, or `{"input", "error"}` for an input that
could not be read. Inputs are local paths or URIs (`file://`, `s3://`, `gs://`, … whatever
`pyarrow.fs` can open), listed by `project.inputs.list_inputs`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from project.inference.preprocess import InvalidInput
from project.inputs import is_uri

if TYPE_CHECKING:
    from project.inference.predictor import Predictor


def load_source(entry: str) -> str | bytes:
    """What the Predictor is given for `entry`: a local path as is (the preprocessor reads it and names
    what is wrong), a URI's bytes read through `pyarrow.fs`. Raises `InvalidInput` when a URI cannot be read."""
    if not is_uri(entry):
        return entry
    import pyarrow as pa
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(entry)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise InvalidInput("file not found") from None
    except (OSError, pa.ArrowException) as exc:
        raise InvalidInput(f"cannot read {entry} ({exc})") from None


def predict_records(
    predictor: Predictor, entries: Sequence[str], topk: int, root: str | None = None
) -> list[dict[str, Any]]:
    """One record per entry, in order; a bad entry becomes an error record and the rest are predicted.
    Relative paths are read against `root` (default: the working directory) and reported as given."""
    records: list[dict[str, Any] | None] = [None] * len(entries)
    readable: list[tuple[int, str | bytes]] = []
    for i, entry in enumerate(entries):
        where = entry if root is None or is_uri(entry) else os.path.join(root, entry)
        try:
            readable.append((i, load_source(where)))
        except InvalidInput as exc:
            records[i] = {"input": entry, "error": exc.reason}
    results = predictor.predict_each([source for _, source in readable], topk=topk)
    for (i, _), result in zip(readable, results, strict=True):
        if isinstance(result, InvalidInput):
            records[i] = {"input": entries[i], "error": result.reason}
        else:
            records[i] = {"input": entries[i], **result.to_dict()}
    return records  # type: ignore[return-value]
