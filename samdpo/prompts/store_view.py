"""Look at one image's prompt file: a text table, a JSON dump with arrays summarised, or a PNG.

Backs ``samdpo prompts show``. The PNG has one panel per class: the grey image, the saliency as
a 'jet' overlay, the CRF mask outline, the box, the points, and under it the VQA answers and the
LLM description. Drawing uses matplotlib's Agg canvas directly, so no global pyplot state is
touched and no display is needed.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samdpo.atomic import atomic_path
from samdpo.errors import ConfigError, DataError
from samdpo.prompts.store import SETTINGS_FILE, array, read_prompts
from samdpo.prompts.tables import blob_bytes

_BLOBS = ("image", "saliency", "mask")
_MAX_COLUMNS = 4
_PANEL_INCHES = (4.0, 5.5)  # width, height of one panel (image + texts)
_IMAGE_INCHES = 3.6  # side of the image area inside a panel
_WRAP = 60  # characters per line of the texts under a panel
_MAX_LINES = 14  # text lines under a panel
_DPI = 100


def _truncate(text: str | None, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with "..." when longer."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def _names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(row["class_name"]) for row in rows]


def select(rows: Sequence[Mapping[str, Any]], classes: Sequence[str] | None) -> list[Mapping[str, Any]]:
    """The rows of the named classes, in file order; all rows when ``classes`` is None or empty.

    Raises:
        ConfigError: a name is not a class of the file.
    """
    if not classes:
        return list(rows)
    unknown = [name for name in classes if name not in _names(rows)]
    if unknown:
        raise ConfigError(f"unknown class(es) {unknown}; the file has {_names(rows)}")
    wanted = set(classes)
    return [row for row in rows if row["class_name"] in wanted]


def _question_ids(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The VQA question ids of all rows, in order of first appearance."""
    ids: dict[str, None] = {}
    for row in rows:
        for qa in row.get("vqa") or []:
            ids.setdefault(str(qa["question_id"]), None)
    return list(ids)


def _box_text(row: Mapping[str, Any]) -> str:
    if row.get("present") is False:
        return f"absent (presence {row['presence']:.2f}): no box"
    if not row.get("has_box") or row.get("box") is None:
        return "no box"
    return "[" + ", ".join(str(int(round(v))) for v in row["box"]) + "]"


def _point_counts(row: Mapping[str, Any]) -> tuple[int, int]:
    """(foreground, background) point counts."""
    labels = list(row.get("point_labels") or [])
    fg = sum(1 for label in labels if int(label) == 1)
    return fg, len(labels) - fg


def decode(row: Mapping[str, Any], column: str) -> np.ndarray | None:
    """The (H, W) array of a blob column, or None when the row has none."""
    if row.get(column) is None or row.get(f"{column}_shape") is None:
        return None
    return array(row, column)


def _blob_problem(row: Mapping[str, Any], column: str) -> str | None:
    """What is wrong with a blob column of one row (shape not two positive sides, byte count not the
    shape's: H*W for ``image`` / ``saliency``, ceil(H*W/8) bit-packed for ``mask``); None when fine."""
    blob, shape = row.get(column), row.get(f"{column}_shape")
    if blob is None or shape is None:
        return None
    if len(shape) != 2 or min(shape) < 1:
        return f"shape {list(shape)} is not (H, W)"
    expected = blob_bytes(column, shape)
    if len(blob) != expected:
        return f"{len(blob)} bytes for shape {list(shape)}, expected {expected}"
    return None


def _numbers_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(column, what is wrong) for a non-finite or inverted box, or non-finite points; None when fine."""
    box = row.get("box")
    if row.get("has_box") and box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        if not np.isfinite([x0, y0, x1, y1]).all():
            return "box", f"not finite: {list(box)}"
        if x1 < x0 or y1 < y0:
            return "box", f"inverted (XYXY): {list(box)}"
    points = np.asarray(row.get("points") or [], dtype=np.float64)
    if not np.isfinite(points).all():
        return "points", "not finite"
    return None


def check_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Refuse a prompt file whose blobs do not fit their shapes, or whose box / points are not finite.

    Raises:
        DataError: naming the file, the sample, the class and the column.
    """
    for row in rows:
        problems = [(column, _blob_problem(row, column)) for column in _BLOBS]
        found = next(((c, p) for c, p in problems if p), None) or _numbers_problem(row)
        if found:
            column, problem = found
            raise DataError(
                f"{path}: sample {row.get('sample_id')}, class {row.get('class_name')}, column {column}: {problem}; "
                "the file is damaged: rerun the prompt_store rule"
            )


def _header(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    first = rows[0] if rows else {}
    shape = first.get("image_shape")
    size = f"{shape[0]}x{shape[1]}" if shape else "?"
    sample = meta.get("sample_id", first.get("sample_id", "?"))
    dataset = meta.get("dataset", first.get("dataset", "?"))
    vqa = f"{first.get('vqa_backend', '?')} / {first.get('vqa_model', '?')}"
    llm = f"{first.get('llm_backend', '?')} / {first.get('llm_model', '?')}"
    return [
        f"sample: {sample}   dataset: {dataset}   image: {size} (HxW)",
        f"CLIP: {first.get('clip', '?')}",
        f"VQA: {vqa}   LLM: {llm}",
    ]


def format_table(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """A header (sample, dataset, image size, CLIP, VQA and LLM backends/models) and one line per class.

    Columns: class, box (XYXY pixels, rounded, or "no box"), fg / bg point counts, mask area
    (pixels), saliency max (0-1), one column per VQA question id, and the description (~60 chars).
    """
    lines = _header(rows, meta)
    if not rows:
        return "\n".join([*lines, "", "(no classes)"])
    question_ids = _question_ids(rows)
    records = []
    for row in rows:
        fg, bg = _point_counts(row)
        mask = decode(row, "mask")
        saliency = decode(row, "saliency")
        answers = {str(qa["question_id"]): qa["answer"] for qa in row.get("vqa") or []}
        records.append(
            {
                "class": row["class_name"],
                "box": _box_text(row),
                "fg": fg,
                "bg": bg,
                "mask_px": int(mask.sum()) if mask is not None else 0,
                "sal_max": f"{saliency.max() / 255.0:.2f}" if saliency is not None and saliency.size else "-",
                **{qid: _truncate(answers.get(qid, "-"), 40) for qid in question_ids},
                "description": _truncate(row.get("description"), 60),
            }
        )
    table = pd.DataFrame.from_records(records).to_string(index=False)
    return "\n".join([*lines, "", table])


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars / arrays and tuples made JSON-serialisable."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    return value


def summarise(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row with its blobs replaced by summaries and their ``*_shape`` columns dropped.

    ``image`` -> {shape: [H, W]}; ``saliency`` -> {shape, max and mean (0-1), peak_xy: [x, y] in
    saliency pixels}; ``mask`` -> {shape, area (pixels)}. A missing blob gives None.
    """
    record = {k: _plain(v) for k, v in row.items() if k not in _BLOBS and k not in {f"{b}_shape" for b in _BLOBS}}
    image = decode(row, "image")
    record["image"] = None if image is None else {"shape": list(image.shape)}
    saliency = decode(row, "saliency")
    if saliency is None or not saliency.size:
        record["saliency"] = (
            None if saliency is None else {"shape": list(saliency.shape), "max": 0.0, "mean": 0.0, "peak_xy": None}
        )
    else:
        y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
        record["saliency"] = {
            "shape": list(saliency.shape),
            "max": round(float(saliency.max()) / 255.0, 4),
            "mean": round(float(saliency.mean()) / 255.0, 4),
            "peak_xy": [int(x), int(y)],
        }
    mask = decode(row, "mask")
    record["mask"] = None if mask is None else {"shape": list(mask.shape), "area": int(mask.sum())}
    return record


def to_json(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """``{"meta": meta, "records": [...]}`` as indented JSON, one record per row (see ``summarise``)."""
    return json.dumps({"meta": _plain(meta), "records": [summarise(row) for row in rows]}, indent=2)


def _panel_text(row: Mapping[str, Any]) -> str:
    """The wrapped VQA answers ("question_id: answer") and description under one panel."""
    lines: list[str] = []
    for qa in row.get("vqa") or []:
        lines += textwrap.wrap(f"{qa['question_id']}: {_truncate(qa['answer'], 120)}", _WRAP) or [
            f"{qa['question_id']}:"
        ]
    description = _truncate(row.get("description"), 200)
    if description:
        lines += textwrap.wrap(f"description: {description}", _WRAP)
    if len(lines) > _MAX_LINES:
        lines = [*lines[: _MAX_LINES - 1], lines[_MAX_LINES - 1][: _WRAP - 3] + "..."]
    return "\n".join(lines)


def draw_prompt(ax: Any, row: Mapping[str, Any]) -> None:
    """The grey image, saliency overlay, CRF mask outline, box and points of one store row on ``ax``
    (a matplotlib Axes; pixel centres at integer coordinates, no ticks)."""
    from matplotlib.patches import Rectangle

    image = decode(row, "image")
    height, width = image.shape if image is not None else (row.get("mask_shape") or (1, 1))
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # pixel centres at integer coordinates
    if image is not None:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=extent)
    saliency = decode(row, "saliency")
    if saliency is not None and saliency.size:
        # extent stretches the saliency grid onto the image (bilinear when the sizes differ)
        # opacity follows the saliency, so the image stays visible where the map is low
        alpha = 0.6 * saliency.astype(np.float32) / 255.0
        ax.imshow(saliency, cmap="jet", vmin=0, vmax=255, alpha=alpha, interpolation="bilinear", extent=extent)
    mask = decode(row, "mask")
    if mask is not None and mask.any() and not mask.all():
        mh, mw = mask.shape
        xs = (np.arange(mw) + 0.5) * width / mw - 0.5
        ys = (np.arange(mh) + 0.5) * height / mh - 0.5
        ax.contour(xs, ys, mask.astype(np.float32), levels=[0.5], colors="white", linewidths=1.2)
    if row.get("has_box") and row.get("box") is not None:
        x0, y0, x1, y1 = (float(v) for v in row["box"])
        # inclusive maxima: the rectangle covers the edge pixels
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor="yellow", linewidth=1.5)
        )
    else:
        ax.text(0.03, 0.97, "no box", transform=ax.transAxes, va="top", ha="left", color="yellow", fontsize=9)
    points = np.asarray(row.get("points") or [], dtype=np.float32).reshape(-1, 2)
    labels = np.asarray(row.get("point_labels") or [], dtype=np.int8)
    if len(labels) == len(points):
        for label, marker, color in ((1, "+", "lime"), (0, "x", "red")):
            chosen = points[labels == label]
            if len(chosen):
                ax.scatter(chosen[:, 0], chosen[:, 1], marker=marker, c=color, s=60, linewidths=1.5)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_panel(ax: Any, row: Mapping[str, Any]) -> None:
    """The prompts (:func:`draw_prompt`), class name and texts of one class on ``ax``."""
    draw_prompt(ax, row)
    ax.set_title(str(row["class_name"]), fontsize=11)
    ax.text(0.0, -0.03, _panel_text(row), transform=ax.transAxes, va="top", ha="left", fontsize=7, family="monospace")


def draw_png(
    rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], out: Path, classes: list[str] | None = None
) -> None:
    """Draw one panel per class (up to 4 per line, ~4 x 5.5 inches each, 100 dpi) into the PNG ``out``.

    Args:
        rows: the file's rows (see ``read_prompts``); meta: its metadata (for the figure title).
        out: PNG path, written atomically.
        classes: only these classes (None: all).

    Raises:
        ConfigError: an unknown class name, or nothing to draw.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chosen = select(rows, classes)
    if not chosen:
        raise ConfigError("no classes to draw")
    columns = min(_MAX_COLUMNS, len(chosen))
    lines = math.ceil(len(chosen) / columns)
    panel_w, panel_h = _PANEL_INCHES
    fig_w, fig_h = panel_w * columns, panel_h * lines + 0.4
    fig = Figure(figsize=(fig_w, fig_h), dpi=_DPI)
    FigureCanvasAgg(fig)
    first = chosen[0]
    title = f"{meta.get('sample_id', first.get('sample_id', ''))} ({meta.get('dataset', first.get('dataset', ''))})"
    fig.suptitle(title, fontsize=12, y=1 - 0.1 / fig_h)
    margin = (panel_w - _IMAGE_INCHES) / 2
    for i, row in enumerate(chosen):
        line, column = divmod(i, columns)
        top = 0.4 + line * panel_h + 0.3  # inches from the top: suptitle, then the panel title
        ax = fig.add_axes(
            (
                (column * panel_w + margin) / fig_w,
                1 - (top + _IMAGE_INCHES) / fig_h,
                _IMAGE_INCHES / fig_w,
                _IMAGE_INCHES / fig_h,
            )
        )
        _draw_panel(ax, row)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)


def show(path: Path, as_json: bool = False, png: Path | None = None, classes: list[str] | None = None) -> str:
    """The text to print for one prompt file (table, or JSON with ``as_json``); draw ``png`` when given.

    ``classes`` keeps only those classes (for the text and the drawing); unknown names raise ConfigError,
    and so does a ``png`` that is the input file, its folder's settings file or a folder. A damaged
    file (blobs that do not fit their shapes, a NaN box) raises DataError (see :func:`check_rows`).
    """
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.parquet"))[:3] if path.parent.is_dir() else []
        hint = f"{path.parent} holds e.g. {', '.join(known)}" if known else "run the prompt_store rule first"
        raise DataError(f"{path}: no such prompt file (one per image id); {hint}")
    if png is not None:
        inputs = {path.resolve(), (path.parent / SETTINGS_FILE).resolve()}
        if Path(png).resolve() in inputs or Path(png).is_dir():
            raise ConfigError(
                f"--png {png}: that is an input ({path} or its {SETTINGS_FILE}) or a folder; give another PNG path"
            )
    rows, meta = read_prompts(path)
    check_rows(rows, path)
    chosen = select(rows, classes)
    if png is not None:
        draw_png(chosen, meta, Path(png))
    return to_json(chosen, meta) if as_json else format_table(chosen, meta)
