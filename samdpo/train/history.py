"""Training logs: one row per epoch, written as CSV and drawn as PNG (both atomically)."""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from samdpo import atomic


def write_history(rows: Sequence[Mapping[str, Any]], path: Path, fields: Sequence[str] | None = None) -> None:
    """Write the rows as CSV; ``fields`` names the columns (default: every row's keys, in first-seen order); a row
    without a column (an epoch not scored on validation) leaves its cell empty."""
    names = list(fields or dict.fromkeys(key for row in rows for key in row))
    with atomic.atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot_history(
    rows: Sequence[Mapping[str, Any]], panels: Sequence[tuple[str, Sequence[str], bool]], path: Path, title: str = ""
) -> None:
    """Draw per-epoch curves: one panel per ``(title, keys, log scale)``, epochs on the x axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5 * len(panels), 3.8), dpi=100)
    FigureCanvasAgg(figure)
    for k, (name, keys, log) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        for key in keys:
            drawn = [row for row in rows if key in row]
            ax.plot([row["epoch"] for row in drawn], [row[key] for row in drawn], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        if log and rows:
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def resume(
    path: Path, key: str, states: Mapping[str, Any], device: Any, verbose: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """Load the ``states`` (name -> object with ``load_state_dict``) from an epoch checkpoint written
    with the same ``key`` (the :func:`samdpo.fingerprint.fingerprint` of the settings, data and initial
    weights); returns the history so far and the first epoch still to run (``verbose``: say so on stdout).

    A checkpoint of another key is ignored (training restarts and overwrites it). A damaged one (empty,
    truncated, not a checkpoint) is reported, moved aside to ``<name>.damaged`` and training restarts.
    Temporary files that a killed save left beside ``path`` are removed.
    """
    import torch

    path = Path(path)
    atomic.remove_temporaries(path)
    if not path.is_file():
        return [], 1
    try:  # read everything before loading anything, so that a damaged file changes no state
        state = torch.load(path, map_location=device, weights_only=True)
        matches = state.get("resume_key") == key
        if matches:
            saved = {name: state[name] for name in states}
            history, epoch = list(state["history"]), int(state["epoch"])
    except Exception as exc:  # noqa: BLE001 - whatever the damage, the file is set aside, never trusted
        aside = path.with_name(path.name + ".damaged")
        with contextlib.suppress(FileNotFoundError):  # another process of the same run moved it already
            path.replace(aside)
        detail = str(exc).splitlines()[0] if str(exc) else "no detail"
        print(
            f"{path}: damaged checkpoint ({type(exc).__name__}: {detail}); moved to {aside}, training starts over",
            file=sys.stderr,
        )
        return [], 1
    if not matches:
        if verbose:
            print(f"{path}: written for other settings, data or initial weights; training starts over", file=sys.stderr)
        return [], 1
    for name, target in states.items():
        target.load_state_dict(saved[name])
    if verbose:
        print(f"resuming from {path} after epoch {epoch}")
    return history, epoch + 1


def save_epoch(
    path: Path, epoch: int, key: str, history: Sequence[Mapping[str, Any]], states: Mapping[str, Any]
) -> None:
    """Write an epoch checkpoint atomically (fsynced): the ``states``' state dicts, the history and the resume key."""
    import torch

    state = {name: target.state_dict() for name, target in states.items()}
    state.update(epoch=epoch, history=list(history), resume_key=key)
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)
