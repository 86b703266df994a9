"""Example overlays for the report: what alignment saw and what it changed, for a few unlabelled pairs.

One row per (image, class) example: the prompts (image, saliency, CRF outline, box, points), the K
candidate masks with the annotator's grade (or rank), and the prediction before alignment (the
stage-1 model) and after it (an aligned model). Nothing here reads labels: examples are chosen
from the annotator's table (pairs that carry a preference first; those preferences may come from
the virtual annotator's reference labels, as alignment saw them), then pairs with a non-empty
candidate, spread evenly over the unlabelled images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.align.annotator import Annotation
from samdpo.align.candidates import CandidateSet
from samdpo.errors import DataError

_CELL_INCHES = 2.2
_DPI = 100
_MASK_RGBA = (1.0, 0.15, 0.15, 0.55)


def choose_examples(
    packed: np.ndarray, annotations: Mapping[tuple[str, int], Annotation], sample_ids: Sequence[str], count: int
) -> list[tuple[int, int]]:
    """Up to ``count`` (image row, class index) pairs of the candidates, chosen without labels.

    Args:
        packed: (N, T, K, B) bit-packed candidates (:mod:`samdpo.align.candidates`).
        annotations: the annotator's table (see ``read_annotations``).
        sample_ids: N sample ids of ``packed``'s rows.
        count: examples wanted, >= 1.

    Returns:
        Pairs with a preference first, then pairs with a non-empty candidate; each group
        in image order and thinned evenly, so the examples spread over the images.
    """
    nonempty = np.asarray(packed).reshape(packed.shape[0], packed.shape[1], -1).max(axis=2) > 0
    preferred, others = [], []
    for i, sample_id in enumerate(sample_ids):
        for t in range(packed.shape[1]):
            found = annotations.get((sample_id, t))
            if found is not None and found.has_preference:
                preferred.append((i, t))
            elif nonempty[i, t]:
                others.append((i, t))

    def spread(pairs: list[tuple[int, int]], wanted: int) -> list[tuple[int, int]]:
        if wanted <= 0 or not pairs:
            return []
        picks = np.unique(np.linspace(0, len(pairs) - 1, num=min(wanted, len(pairs))).round().astype(int))
        return [pairs[k] for k in picks]

    chosen = spread(preferred, count)
    return chosen + spread(others, count - len(chosen))


def _mask_overlay(ax: Any, image: np.ndarray, mask: np.ndarray, title: str) -> None:
    """The grey ``image`` (H, W) with ``mask`` (S, S) bool stretched over it in translucent red."""
    height, width = image.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=extent)
    rgba = np.zeros((*mask.shape, 4), np.float32)
    rgba[mask] = _MASK_RGBA
    ax.imshow(rgba, interpolation="nearest", extent=extent)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _judgement(annotation: Annotation | None, k: int) -> str:
    """How the annotator judged candidate ``k``: its grade (score mode) or rank (rank mode; tied
    candidates share a rank, marked "=")."""
    if annotation is None:
        return "not annotated"
    if annotation.grades is not None:
        return f"grade {int(annotation.grades[k])}"
    ties = np.asarray(annotation.ties)  # tie groups: a larger group is better
    rank = 1 + len(np.unique(ties[ties > ties[k]]))
    return f"rank {rank}" + ("=" if (ties == ties[k]).sum() > 1 else "")


def _check_models(
    meta: Mapping[str, Any],
    annotations: Mapping[tuple[str, int], Annotation],
    before: tuple[np.ndarray, Mapping[str, Any]],
    after: tuple[np.ndarray, Mapping[str, Any]],
) -> None:
    """Both models describe the candidates' classes, ``before`` is the candidates' model, and the
    annotations rank as many candidates as the set holds.

    Raises:
        DataError: any of these does not hold.
    """
    names, count = list(meta["class_names"]), int(meta["count"])
    for label, (_, found) in (("before", before), ("after", after)):
        if list(found.get("class_names", [])) != names:
            raise DataError(f"{label}: class names {found.get('class_names')} differ from the candidates' {names}")
    if before[1].get("model_settings_hash") != meta.get("model_settings_hash"):
        raise DataError(f"before: model {before[1].get('model')} is not the candidates' model {meta.get('model')}")
    if any(len(a.order) != count for a in annotations.values()):
        raise DataError(f"the annotations rank another number of candidates than the set's {count}")


def _prompt_row(prompts: Path, sample_id: str, class_name: str) -> dict[str, Any]:
    """The prompt-store row of (``sample_id``, ``class_name``).

    Raises:
        DataError: the image's prompt file or the class's row is missing.
    """
    from samdpo.prompts.store import read_prompts

    path = Path(prompts) / f"{sample_id}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: no prompt file for {sample_id}; run the prompt_store rule")
    row = next((r for r in read_prompts(path)[0] if r["class_name"] == class_name), None)
    if row is None:
        raise DataError(f"{path}: no row for class {class_name!r}")
    return row


def _predicted_masks(
    models: Mapping[str, tuple[np.ndarray, Mapping[str, int]]], sample_id: str, t: int, cut: int
) -> list[np.ndarray]:
    """(S, S) bool prediction of class ``t`` of ``sample_id`` by each model; ``models`` maps a label
    to (M, T, S, S) uint8 probabilities and sample id -> row.

    Raises:
        DataError: a model has no prediction for the image.
    """
    masks = []
    for label, (probs, position) in models.items():
        if sample_id not in position:
            raise DataError(f"{label}: no prediction for {sample_id}; predict the unlabelled split")
        masks.append(np.asarray(probs[position[sample_id], t]) >= cut)
    return masks


def build_examples(
    candidates: CandidateSet,
    annotations: Mapping[tuple[str, int], Annotation],
    before: tuple[np.ndarray, Mapping[str, Any]],
    after: tuple[np.ndarray, Mapping[str, Any]],
    prompts: Path,
    threshold: float,
    count: int,
) -> list[dict[str, Any]]:
    """The examples :func:`draw_overlays` draws (see there), chosen by :func:`choose_examples`.

    Args:
        candidates: the candidate set (its metadata: sample_ids, class_names, count, model_settings_hash).
        annotations: the annotator's table for these candidates.
        before / after: (probabilities (M, T, S, S) uint8, metadata) of the two models; ``before``
            must be the candidates' model.
        prompts: the dataset's prompt store folder.
        threshold: probability at or above which a pixel is predicted.
        count: examples wanted.

    Raises:
        DataError: the inputs describe other classes, another model or other candidates, or a
            prompt file or prediction is missing.
    """
    from samdpo.evaluation.metrics import probability_cut

    meta = candidates.meta
    _check_models(meta, annotations, before, after)
    names, ids = list(meta["class_names"]), list(meta["sample_ids"])
    models = {
        label: (probs, {sample_id: i for i, sample_id in enumerate(found["sample_ids"])})
        for label, (probs, found) in (("before", before), ("after", after))
    }
    cut = probability_cut(threshold)
    examples = []
    for i, t in choose_examples(candidates.packed, annotations, ids, count):
        row = _prompt_row(prompts, ids[i], names[t])
        masks = _predicted_masks(models, ids[i], t, cut)
        examples.append(
            {
                "row": row,
                "title": f"{ids[i]}\n{names[t]}",
                "candidates": candidates.masks(i, t),
                "annotation": annotations.get((ids[i], t)),
                "before": masks[0],
                "after": masks[1],
            }
        )
    return examples


def draw_overlays(
    examples: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    before_name: str,
    after_name: str,
    out: Path,
) -> None:
    """Draw one row per example into the PNG ``out`` (written atomically).

    Args:
        examples: per example a mapping with ``row`` (the prompt-store row of the class: image,
            saliency, mask, box, points), ``title``, ``candidates`` (K, S, S) bool, ``annotation``
            (:class:`Annotation` or None), ``before`` and ``after`` (S, S) bool predictions.
        labels: the K candidates' column titles (:func:`~samdpo.align.candidates.candidate_labels`).
        before_name / after_name: the two models, for the column titles.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from samdpo.atomic import atomic_path
    from samdpo.prompts.store_view import decode, draw_prompt

    if not examples:
        raise DataError("no example to draw: every candidate is empty and no pair carries a preference")
    columns = 1 + len(labels) + 2
    fig = Figure(figsize=(columns * _CELL_INCHES, len(examples) * (_CELL_INCHES + 0.3)), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(examples), columns, squeeze=False)
    for line, example in zip(axes, examples):
        row = example["row"]
        draw_prompt(line[0], row)
        line[0].set_title(example["title"], fontsize=9)
        image = decode(row, "image")
        for k, label in enumerate(labels):
            _mask_overlay(
                line[1 + k], image, example["candidates"][k], f"{label}: {_judgement(example['annotation'], k)}"
            )
        _mask_overlay(line[-2], image, example["before"], f"before: {before_name}")
        _mask_overlay(line[-1], image, example["after"], f"after: {after_name}")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, format="png")
