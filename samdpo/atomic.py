"""Atomic file output: write to a temporary name in the same folder, rename on success.

A crash leaves at most a hidden temporary file behind, never a file under the final name that
Snakemake would take as done; the next write of the same name removes it (one writer per output,
as Snakemake runs one job per output). A file is fsynced before its rename and the folder after it, so a
renamed file survives a power cut with its content.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _default_mode(base: int) -> int:
    """``base`` masked by the process umask (temporary files are created 0600 / 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writes of ``path`` left beside it; returns them.

    Call only where no other process writes ``path`` at the same time (one Snakemake job per output).
    """
    final = Path(path)
    stale = sorted(final.parent.glob(f".{glob.escape(final.name)}.*.tmp")) if final.parent.is_dir() else []
    for item in stale:
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    Args:
        path: final file name. Its parent folder is created if needed.

    Yields:
        A path in the same folder (so the rename is atomic) that the caller writes.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode(0o666))
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it to ``path`` when the block succeeds.

    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode(0o777))
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync(file)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))
