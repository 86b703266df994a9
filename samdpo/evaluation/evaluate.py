"""``samdpo eval``'s library side: score models' probability maps on the test split of their dataset.

Each model gets a per-image table (:data:`samdpo.evaluation.metrics.IMAGE_COLUMNS`) written as
``NAME.csv`` and a summary (:func:`samdpo.evaluation.metrics.summarize` plus where it came from)
written as ``NAME.json``. Several models of one dataset are scored in one process: the store, its
labels and the splits are read once, and each model's files are what scoring it alone writes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from samdpo import atomic
from samdpo.errors import ConfigError, DataError


@dataclass(frozen=True)
class Scoring:
    """What every model of one evaluation is scored against: the store and split table (as given on the
    command line, recorded in the summaries), the threshold (probability) and the NSD tolerance (spacing unit)."""

    store: str
    splits: str
    threshold: float
    tolerance_mm: float


def summary_path(out: str | Path) -> Path:
    """The summary JSON written next to a per-image CSV (``X.csv`` -> ``X.json``)."""
    return Path(out).with_suffix(".json")


def evaluate_models(
    scoring: Scoring, probs: Sequence[str], outs: Sequence[str], methods: Sequence[str] | None = None, threads: int = 1
) -> list[dict[str, Any]]:
    """Score each folder of ``probs`` (probs.npy + probs.json) and write its per-image CSV to the matching
    ``outs`` entry and its summary next to it; returns the summaries, in order.

    ``methods`` names the models in their summaries (default: each prediction's model folder name).

    Raises:
        ConfigError: ``outs`` or ``methods`` not one per ``probs`` folder.
        DataError: unreadable inputs, predictions of another store, cases without a split, no test image.
    """
    import torch

    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore

    names = list(methods) if methods else [None] * len(probs)
    if not (len(outs) == len(names) == len(probs)):
        raise ConfigError(
            f"--probs gives {len(probs)} folders, --out {len(outs)} files, --method {len(names)} names; give one each"
        )
    torch.set_num_threads(max(1, threads))  # MONAI's per-image steps are small: extra threads only add overhead
    store = SampleStore(Path(scoring.store))
    splits, labels = read_splits(Path(scoring.splits)), store.labels()
    summaries = []
    for folder, out, method in zip(probs, outs, names):
        per_image, summary = evaluate_model(store, labels, splits, scoring, folder, method)
        write_evaluation(out, per_image, summary)
        summaries.append(summary)
    return summaries


def evaluate_model(
    store: Any, labels: np.ndarray, splits: dict[str, str], scoring: Scoring, probs_folder: str, method: str | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-image table and summary of one model's predictions (``probs_folder``) on the test split.

    ``store`` is the dataset's SampleStore, ``labels`` its (N, S, S) uint8 label maps, ``splits`` case -> split.
    """
    from samdpo.evaluation import metrics
    from samdpo.predictions import align_predictions, read_predictions

    probs, meta = read_predictions(Path(probs_folder))
    rows = align_predictions(meta, list(store.samples["sample_id"]), store.class_names, store.kind)
    cases = store.samples["case_id"].to_numpy()[rows]
    unsplit = sorted({c for c in cases if c not in splits})
    if unsplit:
        raise DataError(f"{scoring.splits}: predicted cases {unsplit[:3]} have no split; rerun the split rule")
    chosen = np.flatnonzero([splits[c] == "test" for c in cases])
    if chosen.size == 0:
        raise DataError(
            f"{probs_folder}: none of the {len(rows)} predicted images is in the test split of {scoring.splits}"
        )
    store_rows = rows[chosen]
    probs, truth = np.asarray(probs[chosen]), np.asarray(labels[store_rows])
    samples = store.samples.iloc[store_rows].reset_index(drop=True)
    names, threshold = store.class_names, scoring.threshold
    per_image = metrics.evaluate(probs, truth, samples, names, threshold, scoring.tolerance_mm)
    per_volume = metrics.volume_dice(probs, truth, samples, names, threshold)
    false_positives = metrics.absent_class_false_positives(probs, truth, names, threshold)
    summary = metrics.summarize(per_image, per_volume, names, false_positives)
    summary.update(
        {
            "method": method or Path(str(meta.get("model", probs_folder))).name,
            "dataset": store.kind,
            "model": meta.get("model"),
            "model_settings_hash": meta.get("model_settings_hash"),
            "threshold": threshold,
            "tolerance": scoring.tolerance_mm,
            "spacing_unit": store.meta.get("spacing_unit"),
            "store": scoring.store,
            "splits": scoring.splits,
            "probs": str(probs_folder),
            "test_images": int(chosen.size),
        }
    )
    return per_image, summary


def write_evaluation(out: str | Path, per_image: pd.DataFrame, summary: dict[str, Any]) -> None:
    """Write the per-image CSV to ``out`` and the summary next to it (atomically), and say so on stderr."""
    out = Path(out)
    atomic.write_text(out, per_image.to_csv(index=False))
    atomic.write_text(summary_path(out), json.dumps(summary, indent=2, allow_nan=False) + "\n")
    main = "mdice" if len(summary["class_names"]) > 1 else "dice"
    value = summary["mdice"]
    shown = "n/a" if value is None else f"{value:.2f}"
    print(
        f"{summary['method']}: {main} {shown} % over {summary['test_images']} test images; "
        f"{out} and {summary_path(out)}",
        file=sys.stderr,
    )
