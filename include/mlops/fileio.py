"""Files several processes share: atomic writes and an exclusive lock (POSIX ``flock``).

* :func:`atomic_write_text` / :func:`atomic_write_json`: a reader (another process, Prometheus'
  file discovery) sees the old content or the new one, never a half-written file: the text goes to a
  temporary file in the same folder, which then replaces the target (``os.replace``).
* :func:`locked`: an exclusive lock held on a lock file for a read-modify-write; it blocks until any
  other holder, in this process or another, has released it.

Standard library only: every layer may use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str, *, mode: int | None = None) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) in one step; the folder must exist.

    Args:
        path: the file to write.
        text: its new content.
        mode: permission bits of the file (e.g. ``0o600`` for a secret); default: the umask's.

    Returns:
        ``path``.
    """
    path = Path(path)
    # unique per process and thread: two writers never share a temporary file
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)  # the umask applied to os.open
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any, *, mode: int | None = None, **dumps: Any) -> Path:
    """:func:`atomic_write_text` of ``json.dumps(data, **dumps)`` (e.g. ``indent=1, sort_keys=True``)."""
    return atomic_write_text(path, json.dumps(data, **dumps), mode=mode)


@contextlib.contextmanager
def locked(lock_path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created, with its folder, if missing) for the block.

    By convention the lock file sits next to what it guards: ``metrics.json.lock`` for ``metrics.json``.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
