"""Results tables: one row per method from its evaluation summary, written as CSV, Markdown and a figure.

Columns: ``method``; for multi-class datasets (AMOS) ``mdice``, one column per class (mean 2D Dice of
that organ), ``mdice_3d`` and ``fp_absent`` (the percentage of (image, organ) pairs absent from the ground
truth that got a non-empty prediction), for one-class datasets ``dice``; given the rows' label-volume
summaries (``samdpo volumes``, AMOS), ``mdice_3d_nii``, ``nsd_3d_nii`` and ``hd95_3d_nii`` (mm) read off
the label NIfTI files (one label per voxel, so overlapping class masks count once, unlike ``mdice_3d``);
then ``nsd``, ``hd95``, ``seeds`` (how many models the row averages), ``{metric}_sd`` (their sample
standard deviation of the main metric; empty for one model), ``paper_row`` and ``paper_{metric}`` (the
seed paper's row that corresponds to the row's model and its number, measured on the real dataset:
:file:`paper_numbers.yaml`; empty where the paper has none) and ``data_models`` (which data and models
produced the row). A method given
several summaries (one per training seed) gets the mean of each value over them. Dice and NSD are
percentages, HD95 is in the store's spacing unit; values are rounded to 2 decimals and missing
values are empty cells.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

FIXED_COLUMNS = (
    "method",
    "mdice",
    "dice",
    "mdice_sd",
    "dice_sd",
    "mdice_3d",
    "mdice_3d_nii",
    "nsd_3d_nii",
    "hd95_3d_nii",
    "fp_absent",
    "nsd",
    "hd95",
    "seeds",
    "paper_row",
    "paper_mdice",
    "paper_dice",
    "data_models",
)


def read_summary(path: str | Path) -> dict[str, Any]:
    """A JSON object file (a ``samdpo eval`` summary, an aligned model's settings.json).

    Raises:
        DataError: unreadable, not JSON, or not an object.
    """
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable summary ({exc})") from exc
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a JSON object")
    return value


def table_rows(
    summary_paths: Sequence[str | Path],
    methods: Sequence[str],
    provenance: str,
    volume_paths: Sequence[str | Path] | None = None,
) -> list[dict[str, Any]]:
    """The rows :func:`build_table` takes: one per summary file, named by the matching ``methods`` entry; each
    row's provenance is ``provenance`` plus the summary's model folder and settings hash. ``volume_paths``
    (one ``samdpo volumes`` summary.json per summary, same order) go in as each summary's ``volume_files``.

    Raises:
        ConfigError: not one method (or volume summary) per summary.
        DataError: a summary unreadable or without class names, or a volume summary of another model.
    """
    if len(methods) != len(summary_paths):
        raise ConfigError(
            f"--methods names {len(methods)} methods but --summaries gives {len(summary_paths)} files; "
            "give one name per summary, in the same order"
        )
    if volume_paths and len(volume_paths) != len(summary_paths):
        raise ConfigError(
            f"--volumes gives {len(volume_paths)} files for {len(summary_paths)} summaries; give one each"
        )
    summaries = [read_summary(path) for path in summary_paths]
    for index, path in enumerate(volume_paths or []):
        volumes = read_summary(path)
        if volumes.get("model") != summaries[index].get("model"):
            raise DataError(f"{path}: label volumes of {volumes.get('model')}, not {summaries[index].get('model')}")
        summaries[index] = {**summaries[index], "volume_files": volumes}
    if not summaries:
        raise ConfigError("a results table needs at least one method")
    if not summaries[0].get("class_names"):
        raise DataError(f"{summary_paths[0]}: no class_names; is it a `samdpo eval` summary?")
    rows = []
    for method, summary in zip(methods, summaries):
        source = provenance
        if summary.get("model"):
            source += f"; model {summary['model']}"
            if summary.get("model_settings_hash"):
                source += f" ({str(summary['model_settings_hash'])[:12]})"
        rows.append({"method": method, "summary": summary, "provenance": source})
    return rows


def table_from_summaries(
    dataset: str,
    summary_paths: Sequence[str | Path],
    methods: Sequence[str],
    provenance: str,
    out: str | Path,
    models: Sequence[str] | None = None,
    volume_paths: Sequence[str | Path] | None = None,
) -> list[Path]:
    """``samdpo table``: the results table of ``dataset`` from evaluation summaries (one per ``methods``
    entry, a method's seeds next to each other), written as CSV at ``out`` with its .md and .png; returns the paths.
    ``models`` (one per summary) name each row's model, which picks the paper's number beside it;
    ``volume_paths`` (one per summary) its label volumes' 3D metrics."""
    rows = table_rows(summary_paths, methods, provenance, volume_paths)
    table = build_table(rows, rows[0]["summary"]["class_names"], dataset)
    if models is not None:
        if len(models) != len(methods):
            raise ConfigError(f"--models names {len(models)} models for {len(methods)} summaries; give one per summary")
        table = with_paper_numbers(table, dict(zip(methods, models)), dataset)
    return write_table(table, Path(out), title=f"{dataset}: test split")


def paper_numbers() -> dict[str, Any]:
    """The seed paper's rows by the pipeline's model name (:file:`paper_numbers.yaml`, shipped with the package)."""
    import yaml

    return yaml.safe_load((Path(__file__).parent / "paper_numbers.yaml").read_text())


def with_paper_numbers(table: pd.DataFrame, models: Mapping[str, str], dataset: str) -> pd.DataFrame:
    """``table`` with ``paper_row`` and ``paper_{metric}`` before ``data_models``: the paper's row of each method's
    model (``models``: method -> model name) and its number on ``dataset`` (empty where the paper has none)."""
    rows = paper_numbers()["rows"]
    metric = "mdice" if "mdice" in table.columns else "dice"
    table = table.copy()
    paper = [rows.get(models.get(method, ""), {}) for method in table["method"]]
    values = [entry.get(dataset) for entry in paper]
    position = list(table.columns).index("data_models")
    table.insert(position, f"paper_{metric}", [math.nan if value is None else float(value) for value in values])
    table.insert(position, "paper_row", ["" if value is None else entry["row"] for entry, value in zip(paper, values)])
    return table


def _value(value: Any) -> float:
    return math.nan if value is None else float(value)


def main_metric(class_names: Sequence[str]) -> str:
    """``mdice`` for multi-class datasets, ``dice`` for one-class ones."""
    return "mdice" if len(class_names) > 1 else "dice"


def build_table(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], dataset: str) -> pd.DataFrame:
    """One row per method.

    Args:
        rows: ``{"method": str, "summary": summarize() dict, "provenance": str}`` each, in table order;
            the summaries of one method (its seeds) next to each other.
        class_names: the dataset's class names (the per-organ columns, in this order).
        dataset: dataset name; a summary naming another ``dataset`` is refused.

    Returns:
        The table (see the module docstring for its columns), values rounded to 2 decimals.

    Raises:
        ConfigError: no rows, a method's summaries apart, or a class name that collides with a fixed column.
        DataError: a summary made for other classes or another dataset.
    """
    if not rows:
        raise ConfigError("a results table needs at least one method")
    methods = list(dict.fromkeys(str(row["method"]) for row in rows))
    if [str(row["method"]) for row in rows] != [m for m in methods for row in rows if str(row["method"]) == m]:
        raise ConfigError(
            f"the summaries of one method must be given next to each other: {[row['method'] for row in rows]}"
        )
    names = list(class_names)
    multi = len(names) > 1
    if multi and set(names) & set(FIXED_COLUMNS):
        raise ConfigError(f"class names {sorted(set(names) & set(FIXED_COLUMNS))} collide with the table's columns")
    metric = main_metric(names)
    has_volumes = any("volume_files" in row["summary"] for row in rows)
    volume_columns = ["mdice_3d_nii", "nsd_3d_nii", "hd95_3d_nii"] if has_volumes else []
    records = []
    for method in methods:
        group = [row for row in rows if str(row["method"]) == method]
        values = pd.DataFrame([_record(row, names, dataset) for row in group])
        record: dict[str, Any] = {"method": method, **values.mean(numeric_only=True).to_dict()}
        record[f"{metric}_sd"] = float(values[metric].std(ddof=1)) if len(group) > 1 else math.nan
        record["seeds"] = len(group)
        record["data_models"] = "; ".join(dict.fromkeys(str(row.get("provenance", "")) for row in group))
        records.append(record)
    order = [
        "method",
        metric,
        f"{metric}_sd",
        *(names + ["mdice_3d", *volume_columns, "fp_absent"] if multi else []),
        "nsd",
        "hd95",
        "seeds",
        "data_models",
    ]
    table = pd.DataFrame(records)[order]
    numeric = [c for c in table.columns if c not in ("method", "data_models", "seeds")]
    table[numeric] = table[numeric].astype(float).round(2)
    return table


def _record(row: Mapping[str, Any], names: list[str], dataset: str) -> dict[str, float]:
    """The numbers of one summary (one model)."""
    summary, method = row["summary"], str(row["method"])
    if list(summary.get("class_names", names)) != names:
        raise DataError(
            f"method {method}: summary of classes {summary['class_names']} but the {dataset} table has {names}"
        )
    if summary.get("dataset") not in (None, dataset):
        raise DataError(f"method {method}: summary of dataset {summary['dataset']!r}, not {dataset!r}")
    record: dict[str, float] = {}
    if len(names) > 1:
        record["mdice"] = _value(summary.get("mdice"))
        per_class = summary.get("dice_per_class", {})
        record.update({name: _value(per_class.get(name)) for name in names})
        record["mdice_3d"] = _value(summary.get("mdice_3d"))
        volumes = summary.get("volume_files")
        if volumes is not None:
            record.update({f"{key}_nii": _value(volumes.get(key)) for key in ("mdice_3d", "nsd_3d", "hd95_3d")})
        rate = summary.get("false_positive_rate")
        record["fp_absent"] = math.nan if rate is None else 100.0 * float(rate)
    else:
        record["dice"] = _value(summary.get("mdice"))
    record["nsd"] = _value(summary.get("nsd"))
    record["hd95"] = _value(summary.get("hd95"))
    return record


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown pipe table (``tabulate`` when installed, a plain rendering otherwise); NaN -> empty."""
    escaped = table.astype(object).map(
        lambda v: v.replace("|", "\\|") if isinstance(v, str) else v
    )  # "|" would split a cell
    cells = escaped.astype(object).where(table.notna(), None)
    if importlib.util.find_spec("tabulate") is not None:
        return cells.to_markdown(index=False, missingval="", floatfmt=".2f") + "\n"

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _class_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in FIXED_COLUMNS]


def _figure(table: pd.DataFrame, title: str) -> Any:
    from matplotlib.figure import Figure

    metric = "mdice" if "mdice" in table.columns else "dice"
    organs = _class_columns(table)
    methods = list(table["method"])
    width = max(5.0, 0.9 * len(methods) + 2.0)
    if organs:
        fig = Figure(figsize=(max(width, 0.55 * len(organs) + 4.0), 4.0 + 0.45 * len(methods)), layout="constrained")
        bars, heat = fig.subplots(1, 2, width_ratios=[1, 2.5])
    else:
        fig = Figure(figsize=(width, 4.0), layout="constrained")
        bars, heat = fig.subplots(), None
    values = table[metric].to_numpy(float)
    positions = np.arange(len(methods))
    bars.bar(positions, np.nan_to_num(values), color="tab:blue")
    for x, v in zip(positions, values):
        bars.text(
            x, 0 if math.isnan(v) else v, "n/a" if math.isnan(v) else f"{v:.1f}", ha="center", va="bottom", fontsize=8
        )
    bars.set_xticks(positions, methods, rotation=30, ha="right")
    bars.set_ylim(0, 100)
    bars.set_ylabel(f"{metric} (%)")
    bars.set_title(title)
    if heat is not None:
        grid = table[organs].to_numpy(float)
        image = heat.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=100, cmap="viridis", aspect="auto")
        heat.set_xticks(np.arange(len(organs)), organs, rotation=60, ha="right", fontsize=8)
        heat.set_yticks(positions, methods, fontsize=8)
        for (r, c), v in np.ndenumerate(grid):
            if not math.isnan(v):
                heat.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if v < 60 else "black")
        heat.set_title("2D Dice per class (%)")
        fig.colorbar(image, ax=heat, shrink=0.8)
    return fig


def write_table(table: pd.DataFrame, csv_path: str | Path, title: str | None = None) -> list[Path]:
    """Write ``table`` as CSV, Markdown (``.md``) and a PNG figure (``.png``) next to each other, atomically.

    The figure shows the main metric per method as bars; tables with per-class columns add a
    heatmap of methods x classes.

    Returns:
        The three paths written.
    """
    csv_path = Path(csv_path)
    md_path, png_path = csv_path.with_suffix(".md"), csv_path.with_suffix(".png")
    atomic.write_text(csv_path, table.to_csv(index=False))
    atomic.write_text(md_path, to_markdown(table))
    figure = _figure(table, title or csv_path.stem)
    with atomic.atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return [csv_path, md_path, png_path]
