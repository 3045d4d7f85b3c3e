"""File helpers every package shares: atomic writes and file hashes.

An atomic write goes to a hidden temporary file beside the target and is renamed over it, so a
killed process leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None],
                 verify: Callable[[Path], None] | None = None) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically, creating its folder; return the path.

    `data` may also be a function that writes the temporary file itself (a download, a library's
    own saver). `verify(tmp)` runs on the finished temporary file before it is moved into place and
    raises to refuse it (e.g. a checksum): a refused file never appears at `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
