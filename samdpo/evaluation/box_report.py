"""``samdpo box-quality``'s library side: read the prompt tables and score their boxes on the test split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samdpo.errors import DataError


def read_box_table(path: str | Path, rule: str) -> pd.DataFrame:
    """A prompt table's ``sample_id``, ``class_index`` and ``box`` (an XYXY tuple in pixels, or None);
    ``rule`` names the rule that writes it, for the error of a missing file."""
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise DataError(f"{path}: no prompt table; run the {rule} rule first")
    table = pq.read_table(path, columns=["sample_id", "class_index", "box"]).to_pandas()
    table["box"] = [None if b is None else tuple(b) for b in table["box"]]
    return table


def box_quality_report(
    store: str | Path, splits: str | Path, crf: str | Path, refined: str | Path | None = None
) -> pd.DataFrame:
    """:func:`samdpo.evaluation.box_quality.box_quality` of the CRF table (and the SAM-refined one) against
    the store's test labels, with a leading ``dataset`` column."""
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.evaluation.box_quality import box_quality

    samples = SampleStore(Path(store))
    tables = {"crf_box": read_box_table(crf, "crf")}
    if refined is not None:
        tables["refined_box"] = read_box_table(refined, "refine_boxes")
    splits_of = read_splits(Path(splits))
    report = box_quality(samples.labels(), samples.samples, splits_of, tables, list(samples.class_names))
    report.insert(0, "dataset", samples.kind)
    return report
