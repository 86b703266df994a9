"""The work of ``samdpo prompts saliency | crf | anatomy-prior | presence-prior | refine | saliency-check``, from
folders on disk to files on disk, each table with its provenance and settings hash.

Each step returns the line its command prints (what it wrote, and where).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from samdpo.errors import ConfigError, DataError
from samdpo.fingerprint import spec_hash
from samdpo.settings import parse_settings


def box_settings(values: Mapping[str, Any], class_names: tuple[str, ...]) -> dict[str, Any]:
    """The ``boxes`` section -> class name -> BoxSettings, each class's ``by_class`` entry merged over the rest."""
    from samdpo.prompts.visual.boxes import BoxSettings

    values = dict(values)
    by_class = values.pop("by_class", {}) or {}  # shared by all datasets: names of other datasets' classes are fine
    return {name: parse_settings(BoxSettings, {**values, **by_class.get(name, {})}, "boxes") for name in class_names}


def run_saliency(
    store_dir: Path | str, out: Path | str, clip_id: str, prompts: Mapping[str, Any], settings: Any, progress: bool
) -> str:
    """CLIP + gScoreCAM saliency of every (image, class) of a store (reads no label).

    ``prompts``: optional ``template`` and ``negatives``;
    ``settings``: :class:`~samdpo.prompts.visual.saliency.SaliencySettings`.
    """
    from samdpo.clip.captions import background_prompt, zero_shot_prompt
    from samdpo.clip.loader import load_clip
    from samdpo.data.store import SampleStore
    from samdpo.prompts.visual.saliency import SaliencyEngine
    from samdpo.prompts.visual.saliency_files import write_saliency

    store = SampleStore(Path(store_dir))
    classes = [zero_shot_prompt(store.kind, name, prompts.get("template")) for name in store.class_names]
    negatives = prompts.get("negatives") or [background_prompt(store.kind)]
    engine = SaliencyEngine(load_clip(clip_id), classes, negatives, settings)
    images = store.images()  # images only: the saliency never opens labels.npy
    maps = engine.run(images, progress=progress)
    meta = {
        "dataset": store.kind,
        "sample_ids": list(store.samples["sample_id"]),
        "class_names": list(store.class_names),
        "class_prompts": classes,
        "negative_prompts": list(negatives),
        "clip": clip_id,
        "settings": vars(settings),
        "settings_hash": spec_hash([clip_id, classes, negatives, vars(settings)]),
    }
    write_saliency(Path(out), maps, meta)
    return f"saliency for {len(images)} {store.kind} images x {len(classes)} classes in {out}"


def store_and_saliency(store_dir: Path | str, saliency_dir: Path | str) -> tuple[Any, Any, dict]:
    """The sample store and its saliency maps and metadata, checked to be of the same samples."""
    from samdpo.data.store import SampleStore
    from samdpo.prompts.visual.saliency_files import read_saliency

    store = SampleStore(Path(store_dir))
    maps, meta = read_saliency(Path(saliency_dir))
    if meta["sample_ids"] != list(store.samples["sample_id"]):
        raise ConfigError(f"{saliency_dir}: saliency maps were made for other samples than {store_dir}")
    return store, maps, meta


def run_crf(
    store_dir: Path | str,
    saliency_dir: Path | str,
    out: Path | str,
    crf: Any,
    boxes: Mapping[str, Any],
    prior_path: str | None,
    workers: int,
    progress: bool,
) -> str:
    """Dense-CRF masks, boxes and points of every (image, class) from its saliency (times the
    anatomical prior of ``prior_path``, if given). ``crf``: :class:`~samdpo.prompts.visual.crf.CrfSettings`;
    ``boxes``: the ``boxes`` section."""
    from samdpo.prompts.tables import write_table
    from samdpo.prompts.visual.crf_table import crf_table

    store, maps, meta = store_and_saliency(store_dir, saliency_dir)
    by_class = box_settings(boxes, store.class_names)
    prior, prior_meta = (None, None)
    if prior_path:
        from samdpo.prompts.visual.anatomy import read_prior

        prior, prior_meta = read_prior(Path(prior_path))
        if list(prior.class_names) != list(meta["class_names"]):
            raise ConfigError(
                f"{prior_path}: the prior's classes {list(prior.class_names)} "
                f"are not the saliency's {meta['class_names']}"
            )
    table = crf_table(
        store.images(),
        maps,
        meta["sample_ids"],
        meta["class_names"],
        crf,
        by_class,
        prior=prior,
        workers=workers,
        progress=progress,
    )
    provenance = {
        "dataset": store.kind,
        "saliency_settings_hash": meta["settings_hash"],
        "clip": meta["clip"],
        "crf": vars(crf),
        "boxes": {name: vars(b) for name, b in by_class.items()},
        "anatomy_prior": prior_meta,
        "settings_hash": spec_hash(
            [meta["settings_hash"], vars(crf), {n: vars(b) for n, b in by_class.items()}, prior_meta]
        ),
    }
    write_table(table, Path(out), provenance)
    return f"CRF prompts: {table.num_rows} rows, {sum(table.column('has_box').to_pylist())} with a box, in {out}"


def run_anatomy_prior(store_dir: Path | str, splits: Path | str, out: Path | str, settings: Any) -> str:
    """Fit where each class lies in the body outline's frame, on the labelled split's images and labels only."""
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.prompts.visual.anatomy import fit_prior, write_prior

    store = SampleStore(Path(store_dir))
    assignment = read_splits(Path(splits))
    labelled = store.samples.loc[store.samples["case_id"].map(assignment) == "labeled", "index"].to_numpy()
    if labelled.size == 0:
        raise DataError(
            f"{splits}: no labelled case of {store_dir}; the anatomical prior is fitted on the labelled split"
        )
    prior = fit_prior(
        store.images()[labelled], store.labels()[labelled], store.class_names, settings
    )  # labelled split only
    labelled_ids = sorted(store.samples["sample_id"].iloc[labelled])
    meta = {
        "dataset": store.kind,
        "labelled_images": int(labelled.size),
        "settings_hash": spec_hash([vars(settings), labelled_ids]),
    }
    write_prior(prior, Path(out), meta)
    return f"anatomical prior of {len(store.class_names)} classes from {labelled.size} labelled images in {out}"


def store_heights(store: Any, where: Path | str) -> Any:
    """(N,) heights of the store's slices in their scans (:func:`~samdpo.prompts.visual.presence.slice_heights`).

    Raises:
        DataError: a store prepared before slice counts were recorded.
    """
    from samdpo.prompts.visual.presence import slice_heights

    if "slice_count" not in store.samples.columns:
        raise DataError(f"{where}: the sample table has no slice_count column; rerun the prepare_samples rule")
    try:
        return slice_heights(store.samples["slice_index"].to_numpy(), store.samples["slice_count"].to_numpy())
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from exc


def run_presence_prior(store_dir: Path | str, splits: Path | str, out: Path | str, settings: Any) -> str:
    """Fit where along the scan each class occurs on the labelled split's labels; a ``"validation"``
    threshold is chosen on the validation split's labels. No other split's labels are read."""
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.prompts.visual.presence import fit_presence, write_presence

    store = SampleStore(Path(store_dir))
    assignment = store.samples["case_id"].map(read_splits(Path(splits)))
    labelled = store.samples.loc[assignment == "labeled", "index"].to_numpy()
    if labelled.size == 0:
        raise DataError(
            f"{splits}: no labelled case of {store_dir}; the presence signal is fitted on the labelled split"
        )
    heights = store_heights(store, store_dir)
    labels = store.labels()
    validation = None
    if settings.threshold == "validation":
        chosen_on = store.samples.loc[assignment == "validation", "index"].to_numpy()
        validation = (heights[chosen_on], labels[chosen_on])  # selection only, as every chosen setting
    prior, choice = fit_presence(heights[labelled], labels[labelled], store.class_names, settings, validation)
    labelled_ids = sorted(store.samples["sample_id"].iloc[labelled])
    meta = {
        "dataset": store.kind,
        "labelled_slices": int(labelled.size),
        "labelled_cases": int(store.samples["case_id"].iloc[labelled].nunique()),
        **choice,
        "settings_hash": spec_hash([vars(settings), labelled_ids, choice]),
    }
    write_presence(prior, Path(out), meta)
    return (
        f"presence of {len(store.class_names)} classes from {labelled.size} labelled slices in {out}"
        f" (threshold {prior.threshold:g}{' chosen on the validation split' if choice else ''})"
    )


def run_refine(
    store_dir: Path | str,
    saliency_dir: Path | str,
    crf_path: str,
    embeddings_dir: str,
    sam_values: Mapping[str, Any],
    boxes: Mapping[str, Any],
    settings: Any,
    out: Path | str,
    progress: bool,
) -> str:
    """Refine the CRF boxes with the pretrained SAM (box -> mask -> box, no labels); ``settings``:
    :class:`~samdpo.prompts.visual.refine.RefineSettings`, ``boxes``: the ``boxes`` section."""
    import pyarrow.parquet as pq

    from samdpo.prompts.store import table_meta
    from samdpo.prompts.tables import write_table
    from samdpo.prompts.visual.refine import refine_table
    from samdpo.sam.engine import attach_engine
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.sam.specs import build_model, resolve_sam

    store, maps, _ = store_and_saliency(store_dir, saliency_dir)
    ids = list(store.samples["sample_id"])
    if not Path(crf_path).is_file():
        raise DataError(f"{crf_path}: no CRF prompt table; run the crf rule first")
    by_class = box_settings(boxes, store.class_names)
    sam = resolve_sam(dict(sam_values), store.image_size)
    model = attach_engine(build_model(sam, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0), sam)
    embeddings = load_embeddings(embeddings_dir, model, ids)
    crf_meta = table_meta(Path(crf_path))
    table, summary = refine_table(
        pq.read_table(crf_path), maps, ids, model, embeddings, by_class, settings, store.image_size, progress=progress
    )
    provenance = {
        **crf_meta,
        "refine": {"settings": vars(settings), "sam": sam, **summary},
        "settings_hash": spec_hash([crf_meta["settings_hash"], vars(settings), sam]),
    }
    write_table(table, Path(out), provenance)
    return (
        f"refined prompts: {summary['refined']} of {summary['boxed']} boxes moved by {sam['name']} "
        f"({summary['mean_rounds']:.2f} rounds on average) in {out}"
    )


def saliency_check(saliency_dir: Path | str, out: str | None) -> str:
    """The mean correlation between two classes' saliency maps of one image, per class and overall
    (written as CSV to ``out`` if given), as the text the command prints."""
    from samdpo import atomic
    from samdpo.prompts.visual.saliency_check import class_sensitivity
    from samdpo.prompts.visual.saliency_files import read_saliency

    maps, meta = read_saliency(Path(saliency_dir))
    report = class_sensitivity(maps, list(meta["class_names"]))
    report.insert(0, "dataset", meta["dataset"])
    if out:
        atomic.write_text(out, report.to_csv(index=False, float_format="%.4f"))
    lines = [report.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    overall = float(report["mean_correlation"].iloc[-1])
    if len(meta["class_names"]) < 2:
        lines.append("one class: no two classes' maps to compare")
    else:
        verdict = (
            "the class text steers the map"
            if overall < 0.5
            else "the maps look alike whatever the class: check the CLIP and the prompts"
        )
        lines.append(f"mean correlation between two classes' saliency maps of one image: {overall:.3f} ({verdict})")
    return "\n".join(lines)
