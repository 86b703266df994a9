"""The work of ``samdpo align candidates | annotate | train``, from folders on disk to folders on
disk: the stage-1 model's candidates of the unlabelled images, their annotation (virtual annotator,
prompt agreement or test-time-augmentation consensus), and stage 2.

Each step returns the line its command prints (what it wrote, and where).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samdpo.errors import ConfigError, DataError
from samdpo.settings import parse_settings

#: The inputs each annotator ``reference`` needs besides the store and the candidates.
REFERENCE_NEEDS = {
    "ground_truth": (),
    "prompt": ("prompts",),
    "uncertainty": ("model", "texts", "prompts"),
    "human": ("human",),
}


def run_candidates(
    probs_dir: Path | str, out: Path | str, settings: Any, inputs: ReferenceInputs, progress: bool
) -> str:
    """The K candidates of every (image, class) of the unlabelled images (``settings``: a
    :class:`~samdpo.align.candidates.CandidateSettings`); the model sources read ``inputs``' stage-1
    model (the one that predicted ``probs_dir``), prompts, texts and embeddings, never a label."""
    from samdpo.align.candidates import build_candidates, write_candidates
    from samdpo.predictions import read_predictions

    probs, meta = read_predictions(Path(probs_dir))
    chosen = [i for i, split in enumerate(meta.get("sample_splits") or []) if split == "unlabeled"]
    if not chosen:
        raise DataError(f"{Path(probs_dir)}: no unlabelled image among the predicted ones")
    ids = [meta["sample_ids"][i] for i in chosen]
    selected = np.asarray(probs[chosen])
    size = int(selected.shape[-1])
    draws = model_draws(size, meta, ids, settings, inputs, progress) if settings.needs_model else None
    packed, origin = build_candidates(settings, selected, draws)
    names = meta["class_names"]
    provenance = {
        "dataset": meta["dataset"],
        "sample_ids": ids,
        "class_names": names,
        "count": settings.count,
        "size": size,
        "candidates": settings.describe(),
        "chosen_from": dict(sorted(origin.items())),
        "model": meta["model"],
        "model_settings_hash": meta["model_settings_hash"],
    }
    write_candidates(Path(out), packed, provenance)
    filled = packed.reshape(*packed.shape[:3], -1).any(-1)
    empty = int((~filled.any(-1)).sum())
    sources = ", ".join(f"{name} {n}" for name, n in sorted(origin.items()))
    return (
        f"candidates ({'+'.join(settings.source)}{', empty' if settings.empty else ''}): {len(ids)} unlabelled images "
        f"x {len(names)} classes x {settings.count}; chosen from {sources}; {empty} (image, class) pairs with all "
        "candidates empty"
    )


def model_draws(
    size: int,
    meta: Mapping[str, Any],
    ids: list[str],
    settings: Any,
    inputs: ReferenceInputs,
    progress: bool,
) -> np.ndarray:
    """(N, T, D, S, S) masks (S = ``size``) of the candidates' model sources, from the stage-1 model that made the
    probabilities."""
    from samdpo.align.candidate_draws import draw_masks
    from samdpo.data.store import SampleStore
    from samdpo.devices import pick_device
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.steps import load_trained_model
    from samdpo.train.text_embeddings import read_text_embeddings

    missing = [f"--{flag}" for flag in ("model", "prompts", "texts") if not getattr(inputs, flag)]
    if missing:
        raise ConfigError(
            f"align.candidates.source {list(settings.source)} runs the stage-1 model: needs {', '.join(missing)}"
        )
    model, spec = load_trained_model(inputs.model)
    if spec.get("settings_hash") != meta.get("model_settings_hash"):
        raise ConfigError(
            f"{inputs.model}: not the model whose probabilities are the candidates' ({meta.get('model')})"
        )
    texts, _ = read_text_embeddings(Path(inputs.texts))
    names = meta["class_names"]
    prompts = [load_image_prompts(Path(inputs.prompts), s, names) for s in ids]
    embeddings = load_embeddings(inputs.embeddings, model, ids)
    images = None
    if embeddings is None:
        if not inputs.store:
            raise ConfigError("align candidates: without --embeddings the model sources encode images; give --store")
        store = SampleStore(Path(inputs.store))
        index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
        images = store.images()[[index[s] for s in ids]]
    return draw_masks(
        model,
        embeddings,
        prompts,
        texts,
        len(names),
        size,
        spec["point_count"],
        settings,
        pick_device("auto"),
        progress=progress,
        images=images,
    )


@dataclass(frozen=True)
class AnnotatorSettings:
    """How the candidates are annotated (the ``align`` section's annotator keys; ``mode`` from the variant).

    Attributes:
        mode: ``score`` (grades 1-4) or ``rank`` (an order).
        reference: ``ground_truth`` (the virtual annotator), ``prompt`` (IoU with the CRF mask) or
            ``uncertainty`` (IoU with the stage-1 model's consensus under box jitter).
        classes: ``present`` (an organ only on the images that show it) or ``all``.
        noise: share of grades flipped to a random other grade, in [0, 1].
        noise_seed: draws of that noise.
    """

    mode: str = "score"
    reference: str = "ground_truth"
    classes: str = "all"
    noise: float = 0.0
    noise_seed: int = 0


@dataclass(frozen=True)
class ReferenceInputs:
    """What the ``prompt`` and ``uncertainty`` references, and the candidates' model sources, read (None: not given).

    Attributes:
        prompts: the dataset's prompt store folder.
        model: the stage-1 model folder; texts: its text embeddings (Parquet);
        embeddings: its frozen encoder's image embeddings (None: the encoder runs).
        uncertainty: the ``align.uncertainty`` section.
        human: the people's decision files (``annotations_human_{name}.parquet``) of the ``human`` reference.
        store: the sample store (the images, when no embeddings are given).
    """

    prompts: str | None = None
    model: str | None = None
    texts: str | None = None
    embeddings: str | None = None
    uncertainty: Mapping[str, Any] = field(default_factory=dict)
    human: tuple[str, ...] = ()
    store: str | None = None


def store_rows(
    store: Any, meta: Mapping[str, Any], candidates_dir: Path | str, store_dir: Path | str
) -> dict[str, int]:
    """Sample id -> row of the store, after checking the candidates are of its samples and classes."""
    index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
    if list(store.class_names) != meta["class_names"] or any(s not in index for s in meta["sample_ids"]):
        raise DataError(f"{candidates_dir}: candidates of other samples or classes than {store_dir}")
    return index


def consensus_references(store: Any, sample_ids: list[str], inputs: ReferenceInputs, progress: bool) -> np.ndarray:
    """(N, C, S, S) test-time-augmentation consensus masks of the stage-1 model (the uncertainty reference)."""
    from samdpo.align.uncertainty import UncertaintySettings, consensus_masks
    from samdpo.devices import pick_device
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.steps import load_trained_model
    from samdpo.train.text_embeddings import read_text_embeddings

    settings = parse_settings(UncertaintySettings, inputs.uncertainty, "align.uncertainty")
    model, spec = load_trained_model(inputs.model)
    texts, _ = read_text_embeddings(Path(inputs.texts))
    prompts = [load_image_prompts(Path(inputs.prompts), s, store.class_names) for s in sample_ids]
    embeddings = load_embeddings(inputs.embeddings, model, sample_ids)  # None: the encoder runs here
    index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
    images = None if embeddings is not None else store.images()[[index[s] for s in sample_ids]]
    size = store.images().shape[-1]
    return consensus_masks(
        model,
        embeddings,
        prompts,
        texts,
        len(store.class_names),
        size,
        spec["point_count"],
        settings,
        pick_device("auto"),
        progress=progress,
        images=images,
    )


def _prompt_masks(prompts_dir: str, sample_id: str) -> np.ndarray:
    """(C, S, S) CRF masks of one image's prompt file."""
    from samdpo.prompts.store import array, read_prompts

    path = Path(prompts_dir) / f"{sample_id}.parquet"
    if not path.is_file():
        raise DataError(f"{path}: no prompt file for image {sample_id}; run the prompt_store rule")
    return np.stack([array(row, "mask") for row in read_prompts(path)[0]])


def _references(
    store: Any,
    ids: list[str],
    index: Mapping[str, int],
    classes: int,
    settings: AnnotatorSettings,
    inputs: ReferenceInputs,
    progress: bool,
) -> tuple[Callable[[int], np.ndarray], np.ndarray | None]:
    """The reference masks of the n-th image, and (classes ``present``) which classes each image shows."""
    if (
        settings.reference == "ground_truth"
    ):  # the virtual annotator: labels of the candidates' (unlabelled) images only
        labels = store.labels()
        truth = [np.asarray(labels[index[sample]])[None] == np.arange(1, classes + 1)[:, None, None] for sample in ids]
        graded = np.stack([t.any(axis=(1, 2)) for t in truth]) if settings.classes == "present" else None
        return truth.__getitem__, graded
    if settings.reference == "prompt":
        return lambda n: _prompt_masks(inputs.prompts, ids[n]), None
    return consensus_references(store, ids, inputs, progress).__getitem__, None


def _annotation_rows(ids: list[str], annotations: list) -> tuple[list[dict[str, Any]], list[int], dict[str, int]]:
    """One table row per (image, class), the grades of the graded pairs with a preference, and why-not counts."""
    from samdpo.align.annotator import annotation_row

    rows, grades, reasons = [], [], {}
    for sample, row in zip(ids, annotations):
        for t, annotation in enumerate(row):
            rows.append(annotation_row(sample, t, annotation))
            if annotation.reason:
                reasons[annotation.reason] = reasons.get(annotation.reason, 0) + 1
            elif annotation.grades is not None:
                grades += annotation.grades.tolist()
    return rows, grades, reasons


def _human_annotations(
    paths: tuple[str, ...], meta: Mapping[str, Any], mode: str
) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """The people's merged annotations as N lists of T (the candidates' order), and their pairwise agreement."""
    from samdpo.align.human_files import merge_decision_files

    merged, agreement = merge_decision_files(paths, meta, mode)
    classes = range(len(meta["class_names"]))
    return [[merged[(sample, t)] for t in classes] for sample in meta["sample_ids"]], agreement


def run_annotate(
    store_dir: Path | str,
    candidates_dir: Path | str,
    out: Path | str,
    settings: AnnotatorSettings,
    inputs: ReferenceInputs,
    progress: bool,
) -> str:
    """Grade or rank every candidate set against the chosen reference; writes the annotations table."""
    from samdpo.align.annotator import annotate_all, write_annotations
    from samdpo.align.candidates import read_candidates
    from samdpo.data.store import SampleStore

    missing = [f"--{flag}" for flag in REFERENCE_NEEDS[settings.reference] if not getattr(inputs, flag)]
    if missing:
        raise ConfigError(f"--reference {settings.reference} needs {', '.join(missing)}")
    if settings.classes == "present" and settings.reference != "ground_truth":
        raise ConfigError(
            "align.classes present needs to know which organs an image shows: only the ground_truth reference does "
            f"({settings.reference!r}); use classes all"
        )
    if not 0.0 <= settings.noise <= 1.0:
        raise ConfigError(f"--noise (align.noise) must be in [0, 1], got {settings.noise}")
    if settings.reference == "human" and settings.noise > 0:
        raise ConfigError("align.noise simulates rating noise; people's own decisions (reference human) take none")
    candidates = read_candidates(Path(candidates_dir))
    meta = candidates.meta
    store = SampleStore(Path(store_dir))
    index = store_rows(store, meta, candidates_dir, store_dir)
    ids = meta["sample_ids"]
    extra: dict[str, Any] = {}
    if settings.reference == "human":
        annotations, extra["agreement"] = _human_annotations(inputs.human, meta, settings.mode)
    else:
        references, graded = _references(store, ids, index, len(meta["class_names"]), settings, inputs, progress)
        annotations = annotate_all(
            candidates.packed, candidates.size, references, settings.mode, graded, settings.noise, settings.noise_seed
        )
    rows, grades, reasons = _annotation_rows(ids, annotations)
    with_preference = sum(row["has_preference"] for row in rows)
    summary = {"pairs": len(rows), "with_preference": with_preference, "why_no_preference": reasons, **extra}
    write_annotations(Path(out), rows, {**asdict(settings), **summary})
    histogram = (
        ""
        if not grades
        else ", grades 1-4 of the graded candidates with a preference: "
        + " / ".join(str(grades.count(g)) for g in (1, 2, 3, 4))
    )
    why = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items()))
    histogram += "".join(
        f"; {a['first']} vs {a['second']} on {a['pairs']} pairs: kappa {a['kappa']:.2f}, tau {a['tau']:.2f}"
        for a in extra.get("agreement", [])
    )
    return (
        f"annotations ({settings.reference}, {settings.mode}, classes {settings.classes}, noise {settings.noise}): "
        f"{len(rows)} pairs, {with_preference} with a preference, {len(rows) - with_preference} without "
        f"({why or 'none'}){histogram}"
    )


def run_stage2(
    store_dir: Path | str,
    candidates_dir: Path | str,
    annotations: Path | str,
    prompts_dir: Path | str,
    texts_path: Path | str,
    model_dir: Path | str,
    reference_dir: Path | str | None,
    out: Path | str,
    settings: Any,
    embeddings_dir: str | None,
    splits: str | None,
    progress: bool,
) -> str:
    """Stage 2 (DPO, or best-candidate) of the stage-1 model in ``model_dir`` on the annotated candidates.

    ``settings``: :class:`~samdpo.align.stage2.Stage2Settings`; ``reference_dir``: another reference
    model (None: the stage-1 model).
    """
    from samdpo.align.annotator import read_annotations
    from samdpo.align.pairs import preference_pairs
    from samdpo.align.stage2 import train_stage2
    from samdpo.data.store import SampleStore
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.text_embeddings import read_text_embeddings

    anchored = settings.anchor_weight > 0 and settings.anchor_on == "labeled"
    if anchored and not splits:
        raise ConfigError("stage2.anchor_on labeled needs --splits (the labelled split's ground truth)")
    candidates, spec = candidates_and_model(candidates_dir, model_dir)
    meta = candidates.meta
    store = SampleStore(Path(store_dir))
    index = store_rows(store, meta, candidates_dir, store_dir)
    ids = meta["sample_ids"]
    prompts = [load_image_prompts(Path(prompts_dir), s, store.class_names) for s in ids]
    texts, _ = read_text_embeddings(Path(texts_path))
    found = read_annotations(Path(annotations))
    pairs = preference_pairs(
        ids, len(meta["class_names"]), found, settings.beta1, settings.beta2, settings.min_grade_gap
    )
    policy, reference = _policy_and_reference(spec, model_dir, reference_dir)
    run = {key: spec[key] for key in ("sam", "text_dim", "clip", "point_count", "switches", "stage1", "splits", "data")}
    run |= {"stage1_settings_hash": spec["settings_hash"], "annotations": str(annotations)}
    labelled = labelled_set(store, splits, prompts_dir, policy, embeddings_dir, spec) if anchored else None
    data = (store.images()[[index[s] for s in ids]], candidates, pairs, prompts, texts)
    embeddings = load_embeddings(embeddings_dir, policy, ids)
    point_count = spec["point_count"]
    train_stage2(
        policy,
        reference,
        *data,
        settings,
        Path(out),
        run,
        point_count,
        progress=progress,
        embeddings=embeddings,
        labelled=labelled,
    )
    return f"stage 2 ({asdict(settings)['objective']}) written to {out}"


def candidates_and_model(candidates_dir: Path | str, model_dir: Path | str) -> tuple[Any, dict[str, Any]]:
    """The :class:`~samdpo.align.candidates.CandidateSet` and the model folder's spec, checked to be of that model."""
    from samdpo.align.candidates import read_candidates
    from samdpo.train.model_folder import read_model_spec

    candidates = read_candidates(Path(candidates_dir))
    spec = read_model_spec(model_dir)
    meta = candidates.meta
    if meta.get("model_settings_hash") is None or meta["model_settings_hash"] != spec.get("settings_hash"):
        raise ConfigError(
            f"{candidates_dir}: candidates of another model than {model_dir}; rerun the prediction and candidates rules"
        )
    return candidates, spec


def _policy_and_reference(
    spec: Mapping[str, Any], model_dir: Path | str, reference_dir: Path | str | None
) -> tuple[Any, Any]:
    """The policy (the stage-1 model's weights) and the frozen reference (``reference_dir``'s, or the same)."""
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.sam.specs import build_model
    from samdpo.train.model_folder import WEIGHTS

    policy = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    reference = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    load_checkpoint(policy, Path(model_dir) / WEIGHTS)
    load_checkpoint(reference, Path(reference_dir or model_dir) / WEIGHTS)  # another architecture: key mismatch error
    return policy, reference


def labelled_set(
    store: Any, splits: str, prompts_dir: Path | str, model: Any, embeddings_dir: str | None, spec: Mapping[str, Any]
) -> Any:
    """The labelled split's images, labels, prompts and embeddings: the ``labeled`` anchor's targets."""
    from samdpo.align.stage2 import LabelledSet
    from samdpo.data.splits import split_indices
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.prompt_data import load_image_prompts

    chosen = split_indices(store, splits, ["labeled"])
    ids = [store.samples["sample_id"][i] for i in chosen]
    return LabelledSet(
        store.images()[chosen],
        store.labels()[chosen],
        [load_image_prompts(Path(prompts_dir), s, store.class_names) for s in ids],
        load_embeddings(embeddings_dir, model, ids),
        spec["stage1"]["gt_box_fraction"],
        spec["stage1"]["gt_box_jitter"],
    )
