"""The work of ``samdpo data summary | prepare | split``: a dataset folder's counts, the 2D sample
store, and the case-level split table. Each step returns the text its command prints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samdpo import atomic
from samdpo.data import readers


def summary_text(
    kind: str, root: Path | str, settings: Mapping[str, Any], as_json: bool, out: str | None
) -> str | None:
    """Case, slice and foreground counts of a dataset folder, as a table (or one JSON object);
    written atomically to ``out`` if given (then None), else returned to print."""
    summary = readers.summarize(kind, Path(root), settings)
    text = json.dumps(summary.to_dict(), indent=2) if as_json else summary.to_table()
    if not out:
        return text
    atomic.write_text(out, text + "\n")
    return None


def prepare_store(
    kind: str, root: Path | str, out: Path | str, image_size: int, settings: Mapping[str, Any], progress: bool
) -> str:
    """Read a dataset folder into the 2D sample store at ``out`` (images resized to ``image_size``)."""
    from samdpo.data.store import write_store

    samples = readers.iter_samples(kind, Path(root), image_size, settings)
    count = write_store(samples, Path(out), kind, image_size, progress=progress)
    return f"prepared {count} {kind} samples of {image_size}x{image_size} in {out}"


def split_store(
    store_dir: Path | str, out: Path | str, labeled: float, unlabeled: float, seed: int, validation: float
) -> str:
    """Write the case-level labelled / unlabelled / validation / test table of a store's cases (CSV case_id,split)."""
    from samdpo.data.splits import SPLITS, make_splits, write_splits
    from samdpo.data.store import SampleStore

    store = SampleStore(Path(store_dir))
    assignment = make_splits(store.samples["case_id"], labeled, unlabeled, seed, validation)
    write_splits(assignment, Path(out))
    counts = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    return f"split {len(assignment)} {store.kind} cases: {counts}"
