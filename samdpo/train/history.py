"""Training logs: one row per epoch, written as CSV and drawn as PNG (both atomically)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from samdpo import atomic


def write_history(rows: Sequence[Mapping[str, Any]], path: Path, fields: Sequence[str] | None = None) -> None:
    """Write the rows as CSV; ``fields`` names the columns (default: the first row's keys)."""
    with atomic.atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields or rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_history(rows: Sequence[Mapping[str, Any]], panels: Sequence[tuple[str, Sequence[str], bool]], path: Path, title: str = "") -> None:
    """Draw per-epoch curves: one panel per ``(title, keys, log scale)``, epochs on the x axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5 * len(panels), 3.8), dpi=100)
    FigureCanvasAgg(figure)
    epochs = [row["epoch"] for row in rows]
    for k, (name, keys, log) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        for key in keys:
            ax.plot(epochs, [row[key] for row in rows], marker="o", markersize=3, label=key)
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


def resume(path: Path, settings_hash: str, states: Mapping[str, Any], device: Any, verbose: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Load the ``states`` (name -> object with ``load_state_dict``) from an epoch checkpoint when its
    settings hash matches; returns the history so far and the first epoch still to run (``verbose``:
    say so on stdout)."""
    import torch

    if not Path(path).is_file():
        return [], 1
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("settings_hash") != settings_hash:
        return [], 1
    for name, target in states.items():
        target.load_state_dict(state[name])
    if verbose:
        print(f"resuming from {path} after epoch {state['epoch']}")
    return list(state["history"]), int(state["epoch"]) + 1


def save_epoch(path: Path, epoch: int, settings_hash: str, history: Sequence[Mapping[str, Any]], states: Mapping[str, Any]) -> None:
    """Write an epoch checkpoint atomically: the ``states``' state dicts, the history and the settings hash."""
    import torch

    state = {name: target.state_dict() for name, target in states.items()}
    state.update(epoch=epoch, history=list(history), settings_hash=settings_hash)
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)
