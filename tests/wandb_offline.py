"""Read back what an offline W&B run wrote (`<dir>/wandb/offline-run-*/run-*.wandb`), for tests.

wandb ≥ 0.19 no longer ships a Python reader for its transaction log, so this parses the format itself:
a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of LevelDB-log records (crc32,
length, type: full/first/middle/last), each payload one `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def _payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    folder: Path
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history_keys: set[str] = field(default_factory=set)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_offline_run(folder: Path) -> OfflineRun:
    """Parse `offline-run-*/run-*.wandb` into the config, history keys, summary, artifacts and exit code."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder=folder)
    for payload in _payloads(log_file):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group, run.tags = record.run.display_name, record.run.run_group, list(record.run.tags)
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history_keys.update(_key(item) for item in record.history.item)
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "artifact":
            art = record.artifact
            run.artifacts.append(
                {
                    "type": art.type,
                    "name": art.name,
                    "aliases": list(art.aliases),
                    "files": [entry.path for entry in art.manifest.contents],
                }
            )
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under `root`, oldest first."""
    return [read_offline_run(p) for p in sorted(root.rglob("offline-run-*")) if p.is_dir()]
