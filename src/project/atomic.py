"""Atomic writes: a reader (or a run killed midway) sees the old file or folder or the whole new one, never half.

The data goes to a temporary name in the same folder, is flushed to disk, then renamed over the target
(`os.replace` is atomic on one filesystem). Use it for every result another step or a user loads later:
`atomic_path` for one file, `atomic_dir` for a folder (a bundle, a prepared data set, a Triton model).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on a clean exit it replaces `path` in one step.
    On an error the temporary file is removed and `path` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name (not mkstemp): the writer creates the file, so it gets the usual permissions
    tmp_path = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh empty folder beside `path` to build in; on a clean exit it takes `path`'s place.

    The swap is two renames (old folder aside, new one in) and the old one is deleted only once the new
    one is in place, so a kill at any moment leaves the old folder, the new one, or (between the two
    renames) no `path` at all, never a mix. If the second rename fails the old folder is put back. On an
    error inside the block the temporary folder is removed and `path` is left as it was. Leftovers of
    killed writers (hidden `.NAME.PID.*` siblings whose process is gone) are cleared on the next call."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clear_dead_leftovers(target)
    stem = f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp, old = target.parent / f"{stem}.tmp", target.parent / f"{stem}.old"
    tmp.mkdir()
    try:
        yield tmp
        moved = target.exists() or target.is_symlink()
        if moved:
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if moved:
                os.replace(old, target)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
    if old.is_symlink() or old.is_file():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def _clear_dead_leftovers(target: Path) -> None:
    """Remove `.NAME.PID.*.tmp|old` siblings left by a writer that was killed (its PID no longer runs)."""
    for leftover in target.parent.glob(f".{target.name}.*.*"):
        parts = leftover.name[len(target.name) + 2 :].split(".")
        if len(parts) != 3 or parts[2] not in ("tmp", "old") or not parts[0].isdigit():
            continue
        if not _pid_alive(int(parts[0])):
            shutil.rmtree(leftover, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its folders alone
    return True


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
