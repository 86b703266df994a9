"""People's decision files (``annotations_human_{name}.parquet``, written by :mod:`samdpo.human`): their
metadata, reading one checked against the candidates, and merging several into the annotations ``align``
trains on, with their agreement."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from samdpo.align.agreement import merge_annotations, pairwise_agreement
from samdpo.align.annotator import Annotation, read_annotations
from samdpo.errors import DataError

#: The candidates' metadata a decision file must agree with.
IDENTITY = ("dataset", "model_settings_hash", "candidates", "class_names")


def decision_meta(path: Path | str) -> dict[str, Any]:
    """A decision file's metadata: annotator, mode and the candidates' identity."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no decision file; grade with `samdpo annotate serve` first")
    try:
        return json.loads((pq.read_schema(path).metadata or {}).get(b"samdpo", b"{}"))
    except (OSError, ValueError, pa.ArrowException) as error:
        raise DataError(f"{path}: not a readable decision file ({error}); move it away to start again") from error


def read_decisions(path: Path | str, candidates: Mapping[str, Any], mode: str | None) -> tuple[str, dict]:
    """(annotator name, (sample id, class index) -> Annotation) of one decision file, checked to be on
    ``candidates`` (their metadata) in ``mode`` (None: any)."""
    meta = decision_meta(path)
    differing = sorted(key for key in IDENTITY if meta.get(key) != candidates.get(key))
    if differing:
        raise DataError(
            f"{path}: decisions on other candidates ({', '.join(differing)} differ from the candidates'); "
            "grade the current candidates again"
        )
    if mode is not None and meta.get("mode") != mode:
        raise DataError(f"{path}: decisions in {meta.get('mode')!r} mode, the annotate rule wants {mode!r}")
    return str(meta["annotator"]), read_annotations(path)


def merge_decision_files(
    paths: Sequence[Path | str], candidates: Mapping[str, Any], mode: str
) -> tuple[dict[tuple[str, int], Annotation], list[dict[str, Any]]]:
    """The merged annotation of every (image, class) of ``candidates`` and the pairwise agreement rows."""
    annotators: dict[str, dict] = {}
    for path in paths:
        name, found = read_decisions(path, candidates, mode)
        if name in annotators:
            raise DataError(f"{path}: a second decision file of {name}")
        annotators[name] = found
    keys = [(sample, t) for sample in candidates["sample_ids"] for t in range(len(candidates["class_names"]))]
    return merge_annotations(annotators, mode, keys), pairwise_agreement(annotators, mode)
