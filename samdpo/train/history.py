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
