"""File helpers every package shares: atomic writes and file hashes.

An atomic write goes to a hidden temporary file beside the target and is renamed over it, so a
killed process leaves either the old file or the new one, never half of one. `atomic_write` takes
the bytes, or a `writer(tmp_path)` callable for formats whose library writes the file itself
(safetensors, numpy); `atomic_folder` does the same for a whole folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that needs a file name (pyarrow, PyAV, wave...):
    renamed over `path` when the block ends normally, removed when it raises. The temporary name
    keeps the target's suffix, since some writers choose their format by it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically, creating its folder; return the path.

    `data` may also be a callable that writes the file at the temporary path it is given (e.g.
    `lambda tmp: safetensors.torch.save_file(tensors, str(tmp))`)."""
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A hidden, unique name beside `path` (same file system, so a rename into place is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}.{os.getpid()}.{time.time_ns()}")


def replace_folder(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the complete folder `src` to `dst`, replacing any folder there.

    A folder cannot be renamed over a non-empty one, so the old one is first renamed aside, then
    the new one renamed into place, and only then is the old one deleted: at every moment `dst`
    exists (old or new), except for the instant between the two renames, after which the old copy
    is still on disk under its hidden name (`recover_folder` puts it back)."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists():
        old = temp_sibling(dst, "old")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def recover_folder(dst: str | os.PathLike) -> bool:
    """After a kill inside `replace_folder`: if `dst` is missing but its set-aside old copy exists,
    rename the newest such copy back; return whether anything was recovered."""
    dst = Path(dst)
    if dst.exists():
        return False
    olds = sorted(dst.parent.glob(f".{dst.name}.old.*"), key=lambda p: p.stat().st_mtime_ns)
    if not olds:
        return False
    os.replace(olds[-1], dst)
    return True


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_folder(dst) as tmp:` fill `tmp`; on success it replaces `dst` (`replace_folder`),
    on an exception it is removed and `dst` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        replace_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
