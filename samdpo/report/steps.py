"""The work of ``samdpo overlays``: the report's figure from the candidates, annotations, prompt store
and the predictions before and after alignment."""

from __future__ import annotations

from pathlib import Path

from samdpo.errors import ConfigError


def run_overlays(
    prompts_dir: Path | str,
    candidates_dir: Path | str,
    annotations: Path | str,
    before: Path | str,
    after: Path | str,
    threshold: float,
    examples: int,
    out: Path | str,
) -> str:
    """Draw ``examples`` (image, class) rows: prompts, graded candidates, predictions before / after;
    returns the line to print."""
    from samdpo.align.annotator import read_annotations
    from samdpo.align.candidates import candidate_labels, read_candidates
    from samdpo.predictions import read_predictions
    from samdpo.report.overlays import build_examples, draw_overlays

    if examples < 1:
        raise ConfigError(f"--examples must be >= 1, got {examples}")
    candidates = read_candidates(Path(candidates_dir))
    first, last = read_predictions(Path(before)), read_predictions(Path(after))
    rows = build_examples(
        candidates, read_annotations(Path(annotations)), first, last, Path(prompts_dir), threshold, examples
    )
    draw_overlays(rows, candidate_labels(candidates.meta), Path(before).name, Path(after).name, Path(out))
    return f"{len(rows)} examples in {out}"
