"""Synthetic phantoms written in the real datasets' on-disk layouts (the embedded default's data)."""

from __future__ import annotations

from pathlib import Path

from samdpo.errors import ConfigError

KINDS = ("amos", "busi", "cxr")


def write(
    kind: str, out: Path, cases: int, seed: int, *, size: int = 128, slices: int = 40, layout: str = "montgomery"
) -> None:
    """Write ``cases`` phantoms of one kind into ``out``.

    Args:
        kind: ``amos``, ``busi`` or ``cxr``.
        size, slices: AMOS in-plane voxels per side and axial slices per volume.
        layout: CXR folder layout, ``montgomery`` or ``paired``.

    Raises:
        ConfigError: an unknown kind or CXR layout.
    """
    from samdpo.synth import amos, busi, cxr

    if kind == "amos":
        amos.write(out, cases, seed, amos.AmosSynthSettings(size=size, slices=slices))
    elif kind == "busi":
        busi.write(out, cases, seed)
    elif kind == "cxr":
        cxr.write(out, cases, seed, layout=layout)
    else:
        raise ConfigError(f"unknown phantom kind {kind!r}; expected one of {KINDS}")
