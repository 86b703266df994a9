"""A synthetic dataset written into a fresh folder, atomically (what ``samdpo synth`` runs)."""

from __future__ import annotations

from pathlib import Path

from samdpo import atomic, synth
from samdpo.errors import ConfigError


def write_folder(
    kind: str, out: Path | str, cases: int, seed: int, force: bool, *, size: int | None, slices: int | None, layout: str
) -> str:
    """Write ``cases`` phantoms of ``kind`` into ``out`` (a non-empty folder is replaced only with
    ``force``); returns the line the command prints. ``size``, ``slices``: AMOS only (None: the
    :class:`~samdpo.synth.amos.AmosSynthSettings` default); ``layout``: CXR only."""
    from samdpo.synth.amos import AmosSynthSettings

    default = AmosSynthSettings()
    size, slices = default.size if size is None else size, default.slices if slices is None else slices
    if cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {cases}")
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise ConfigError(f"{folder}: folder exists and is not empty; pass --force to replace it")
    with atomic.atomic_dir(folder) as tmp:
        synth.write(kind, tmp, cases, seed, size=size, slices=slices, layout=layout)
    return f"wrote {cases} synthetic {kind} cases to {folder}"
