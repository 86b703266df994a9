"""``samdpo dpo-effect``'s library side: each aligned model against the stage-1 model it started from.

A row per aligned model: the paired mDice difference on the test split with its case-bootstrap 95%
interval (:func:`samdpo.evaluation.paired.paired_difference`, mDice in percent), and, given the
models' settings.json, what their alignment run recorded (:data:`DIAGNOSTICS`). Written as CSV and
as a Markdown table next to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from samdpo import atomic
from samdpo.errors import ConfigError, DataError

#: What an aligned model's settings.json records about its run (see samdpo.align.stage2).
DIAGNOSTICS = (
    "pairs",
    "pairs_without_preference",
    "median_disagreement_px",
    "median_disagreement_share",
    "at_ln2",
    "mean_margin",
    "best_rose",
)


def read_evaluation(folder: str | Path, model: str) -> pd.DataFrame:
    """A model's per-image evaluation (``FOLDER/MODEL.csv``, written by ``samdpo eval``)."""
    path = Path(folder) / f"{model}.csv"
    if not path.is_file():
        raise DataError(f"{path}: no per-image evaluation of {model}; run the evaluate rule first")
    return pd.read_csv(path)


def dpo_effect_rows(
    folder: str | Path,
    reference: str,
    models: Sequence[str],
    diagnostics: Sequence[str] | None = None,
    draws: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per model of ``models`` against ``reference`` (evaluations read from ``folder``); with
    ``diagnostics`` (one settings.json per model, in order) the run's diagnostics too."""
    from samdpo.evaluation.paired import paired_difference
    from samdpo.evaluation.tables import read_summary

    if diagnostics and len(diagnostics) != len(models):
        raise ConfigError(f"--diagnostics: one settings.json per model ({len(models)}), got {len(diagnostics)}")
    before = read_evaluation(folder, reference)
    rows = []
    for k, model in enumerate(models):
        r = paired_difference(before, read_evaluation(folder, model), draws=draws, seed=seed)
        row = {
            "model": model,
            "reference_model": reference,
            "mdice_reference": r.reference,
            "mdice_model": r.model,
            "difference": r.difference,
            "low": r.low,
            "high": r.high,
            "confidence": r.confidence,
            "cases": r.cases,
            "images": r.images,
            "draws": r.draws,
        }
        if diagnostics:
            written = read_summary(diagnostics[k])
            row |= {key: written.get(key) for key in DIAGNOSTICS}
            reasons = sorted((written.get("why_no_preference") or {}).items())
            row["why_no_preference"] = "; ".join(f"{why}: {n}" for why, n in reasons)
        rows.append(row)
    return rows


def _shown(value: Any, spec: str) -> str:
    """A number formatted, or ``-`` where the run recorded none (no pair to train on)."""
    return "-" if value is None else format(value, spec)


def dpo_effect_markdown(rows: Sequence[Mapping[str, Any]], reference: str, diagnostics: bool) -> str:
    """The rows as Markdown: the paired differences, then (``diagnostics``) the alignment runs' diagnostics."""
    lines = [
        f"| model | {reference} mDice | model mDice | difference | 95% interval (case bootstrap) | cases | images |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    lines += [
        f"| {row['model']} | {row['mdice_reference']:.2f} | {row['mdice_model']:.2f} | {row['difference']:+.2f} | "
        f"[{row['low']:+.2f}, {row['high']:+.2f}] | {row['cases']} | {row['images']} |"
        for row in rows
    ]
    if diagnostics:
        lines += [
            "",
            "Alignment diagnostics (last epoch; margin: sum_k w_k (log pi - log pi_ref) of a pair):",
            "",
            (
                "| model | pairs with a preference | without (why) | median disagreement px (share of the largest "
                "candidate) | share at ln 2 | mean margin | best candidate rose |"
            ),
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {row['model']} | {row['pairs']} | "
            f"{row['pairs_without_preference']} ({row['why_no_preference'] or '-'}) | "
            f"{_shown(row['median_disagreement_px'], '.0f')} ({_shown(row['median_disagreement_share'], '.0%')}) | "
            f"{_shown(row['at_ln2'], '.2f')} | "
            f"{_shown(row['mean_margin'], '.2f')} | {_shown(row['best_rose'], '.2f')} |"
            for row in rows
        ]
    return "\n".join(lines) + "\n"


def write_dpo_effect(out: str | Path, rows: Sequence[Mapping[str, Any]], markdown: str) -> None:
    """Write the rows as CSV at ``out`` (4 decimals) and the Markdown next to it (``.md``), atomically."""
    atomic.write_text(out, pd.DataFrame(list(rows)).to_csv(index=False, float_format="%.4f"))
    atomic.write_text(Path(out).with_suffix(".md"), markdown)
