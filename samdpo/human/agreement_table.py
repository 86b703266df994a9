"""``samdpo annotate agreement``: each person's grades against the virtual annotator's IoU bins.

This reads the ground truth of the unlabelled images (the IoU of each candidate), so like the virtual
annotator and evaluation it is for phantoms or a labelled check set, never for training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from samdpo.align.agreement import is_decided, virtual_agreement
from samdpo.align.annotator import mask_iou
from samdpo.align.candidates import read_candidates
from samdpo.atomic import atomic_path
from samdpo.errors import DataError


def candidate_ious(store_dir: Path | str, candidates_dir: Path | str, keys: set[tuple[str, int]]) -> dict:
    """(sample id, class index) -> (K,) IoU of each candidate with the ground truth, for ``keys``."""
    from samdpo.align.steps import store_rows
    from samdpo.data.store import SampleStore

    candidates = read_candidates(Path(candidates_dir))
    meta = candidates.meta
    store = SampleStore(Path(store_dir))
    index, labels = store_rows(store, meta, candidates_dir, store_dir), store.labels()
    rows = {sample: n for n, sample in enumerate(meta["sample_ids"])}
    unknown = sorted(key for key in keys if key[0] not in rows or not 0 <= key[1] < len(meta["class_names"]))
    if unknown:
        raise DataError(f"{candidates_dir}: no candidates for image {unknown[0][0]} class {unknown[0][1]}")
    out = {}
    for sample, t in sorted(keys):
        masks = candidates.masks(rows[sample], t)
        out[(sample, t)] = mask_iou(masks, np.asarray(labels[index[sample]]) == t + 1)
    return out


def run_agreement(
    store_dir: Path | str, candidates_dir: Path | str, human: Sequence[Path | str], out: Path | str
) -> str:
    """Write one block of IoU-bin rows per decision file (column ``annotator``) to the CSV ``out``."""
    from samdpo.align.human_files import decision_meta, read_decisions

    meta = read_candidates(Path(candidates_dir)).meta
    people = [(decision_meta(path).get("mode"), *read_decisions(path, meta, None)) for path in human]
    decided = {key for _, _, found in people for key, annotation in found.items() if is_decided(annotation)}
    ious = candidate_ious(store_dir, candidates_dir, decided)  # the labels are read once for everyone
    blocks, lines = [], []
    for mode, name, found in people:
        rows = pd.DataFrame(virtual_agreement(found, ious))
        blocks.append(rows.assign(annotator=name, mode=mode))
        last = rows.iloc[-1]
        kappa, tau = last["kappa"], last["tau"]
        lines.append(f"{name} ({mode}): {last['candidates']} candidates, kappa {kappa:.2f}, tau {tau:.2f}")
    table = pd.concat(blocks, ignore_index=True)
    table = table[["annotator", "mode", *[c for c in table.columns if c not in ("annotator", "mode")]]]
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return "agreement with the virtual annotator: " + "; ".join(lines) + f"; written to {out}"
