"""``samdpo clip ...`` and ``samdpo prompts ...``: thin command-line entry points."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any


from samdpo.errors import ConfigError, DataError
from samdpo.settings import json_object


def _settings(cls: type, values: dict[str, Any], section: str) -> Any:
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad {section} settings: {exc}") from exc


def settings_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable settings (provenance of generated prompts)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _threads(count: int) -> None:
    import torch

    torch.set_num_threads(max(1, count))


def _pretrain(args: argparse.Namespace) -> None:
    from samdpo.clip.pretrain import PretrainSettings, pretrain

    _threads(args.threads)
    history = pretrain(_settings(PretrainSettings, json_object(args.settings, "--settings"), "clip.pretrain"), Path(args.out))
    print(f"pretrained CLIP saved to {args.out}: final {history[-1]}", file=sys.stderr)


def _saliency(args: argparse.Namespace) -> None:
    from samdpo.data.store import SampleStore
    from samdpo.clip.captions import background_prompt, zero_shot_prompt
    from samdpo.clip.loader import load_clip
    from samdpo.prompts.visual.saliency import SaliencyEngine, SaliencySettings
    from samdpo.prompts.visual.saliency_files import write_saliency

    _threads(args.threads)
    store = SampleStore(Path(args.store))
    settings = _settings(SaliencySettings, json_object(args.settings, "--settings"), "saliency")
    prompts = json_object(args.prompts, "--prompts")
    classes = [zero_shot_prompt(store.kind, name, prompts.get("template")) for name in store.class_names]
    negatives = prompts.get("negatives") or [background_prompt(store.kind)]
    engine = SaliencyEngine(load_clip(args.clip), classes, negatives, settings)
    images = store.images()  # images only: the saliency never opens labels.npy
    maps = engine.run(images, progress=not args.no_progress)
    meta = {
        "dataset": store.kind,
        "sample_ids": list(store.samples["sample_id"]),
        "class_names": list(store.class_names),
        "class_prompts": classes,
        "negative_prompts": list(negatives),
        "clip": args.clip,
        "settings": vars(settings),
        "settings_hash": settings_hash(args.clip, classes, negatives, vars(settings)),
    }
    write_saliency(Path(args.out), maps, meta)
    print(f"saliency for {len(images)} {store.kind} images x {len(classes)} classes in {args.out}", file=sys.stderr)


def _store_and_saliency(args: argparse.Namespace) -> tuple[Any, Any, dict]:
    """The sample store of ``--store`` and the saliency of ``--saliency``, checked to be of the same samples."""
    from samdpo.data.store import SampleStore
    from samdpo.prompts.visual.saliency_files import read_saliency

    store = SampleStore(Path(args.store))
    maps, meta = read_saliency(Path(args.saliency))
    if meta["sample_ids"] != list(store.samples["sample_id"]):
        raise ConfigError(f"{args.saliency}: saliency maps were made for other samples than {args.store}")
    return store, maps, meta


def _box_settings(text: str | None, class_names: tuple[str, ...]) -> dict[str, Any]:
    """``--boxes`` JSON -> class name -> BoxSettings, each class's ``by_class`` entry merged over the rest."""
    from samdpo.prompts.visual.boxes import BoxSettings

    values = json_object(text, "--boxes")
    by_class = values.pop("by_class", {}) or {}  # shared by all datasets: names of other datasets' classes are fine
    return {name: _settings(BoxSettings, {**values, **by_class.get(name, {})}, "boxes") for name in class_names}


def _crf(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.crf import CrfSettings
    from samdpo.prompts.visual.crf_table import crf_table
    from samdpo.prompts.tables import write_table

    store, maps, meta = _store_and_saliency(args)
    crf = _settings(CrfSettings, json_object(args.crf, "--crf"), "crf")
    boxes = _box_settings(args.boxes, store.class_names)
    prior, prior_meta = (None, None)
    if args.prior:
        from samdpo.prompts.visual.anatomy import read_prior

        prior, prior_meta = read_prior(Path(args.prior))
        if list(prior.class_names) != list(meta["class_names"]):
            raise ConfigError(f"{args.prior}: the prior's classes {list(prior.class_names)} are not the saliency's {meta['class_names']}")
    table = crf_table(
        store.images(), maps, meta["sample_ids"], meta["class_names"], crf, boxes, prior=prior, workers=args.threads, progress=not args.no_progress
    )
    provenance = {
        "dataset": store.kind,
        "saliency_settings_hash": meta["settings_hash"],
        "clip": meta["clip"],
        "crf": vars(crf),
        "boxes": {name: vars(b) for name, b in boxes.items()},
        "anatomy_prior": prior_meta,
        "settings_hash": settings_hash(meta["settings_hash"], vars(crf), {n: vars(b) for n, b in boxes.items()}, prior_meta),
    }
    write_table(table, Path(args.out), provenance)
    print(f"CRF prompts: {table.num_rows} rows, {sum(table.column('has_box').to_pylist())} with a box, in {args.out}", file=sys.stderr)


def _anatomy_prior(args: argparse.Namespace) -> None:
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.prompts.visual.anatomy import AnatomySettings, fit_prior, write_prior

    store = SampleStore(Path(args.store))
    settings = _settings(AnatomySettings, json_object(args.settings, "--settings"), "anatomy")
    splits = read_splits(Path(args.splits))
    labelled = store.samples.loc[store.samples["case_id"].map(splits) == "labeled", "index"].to_numpy()
    if labelled.size == 0:
        raise DataError(f"{args.splits}: no labelled case of {args.store}; the anatomical prior is fitted on the labelled split")
    prior = fit_prior(store.images()[labelled], store.labels()[labelled], store.class_names, settings)  # labelled split only
    meta = {"dataset": store.kind, "labelled_images": int(labelled.size), "settings_hash": settings_hash(vars(settings), sorted(store.samples["sample_id"].iloc[labelled]))}
    write_prior(prior, Path(args.out), meta)
    print(f"anatomical prior of {len(store.class_names)} classes from {labelled.size} labelled images in {args.out}", file=sys.stderr)


def _refine(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from samdpo.prompts.store import table_meta
    from samdpo.prompts.visual.refine import RefineSettings, refine_table
    from samdpo.prompts.tables import write_table
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.sam.specs import build_model, resolve_sam

    _threads(args.threads)
    settings = _settings(RefineSettings, json_object(args.settings, "--settings"), "refine")
    sam_values = json_object(args.sam, "--sam")
    store, maps, _ = _store_and_saliency(args)
    ids = list(store.samples["sample_id"])
    if not Path(args.crf).is_file():
        raise DataError(f"{args.crf}: no CRF prompt table; run the crf rule first")
    boxes = _box_settings(args.boxes, store.class_names)
    sam = resolve_sam(sam_values, store.image_size)
    model = build_model(sam, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0)
    embeddings = load_embeddings(args.embeddings, model, ids)
    crf_meta = table_meta(Path(args.crf))
    table, summary = refine_table(pq.read_table(args.crf), maps, ids, model, embeddings, boxes, settings, store.image_size, progress=not args.no_progress)
    provenance = {
        **crf_meta,
        "refine": {"settings": vars(settings), "sam": sam, **summary},
        "settings_hash": settings_hash(crf_meta["settings_hash"], vars(settings), sam),
    }
    write_table(table, Path(args.out), provenance)
    print(
        f"refined prompts: {summary['refined']} of {summary['boxed']} boxes moved by {sam['name']} "
        f"({summary['mean_rounds']:.2f} rounds on average) in {args.out}",
        file=sys.stderr,
    )


def _saliency_check(args: argparse.Namespace) -> None:
    from samdpo import atomic
    from samdpo.prompts.visual.saliency_check import class_sensitivity
    from samdpo.prompts.visual.saliency_files import read_saliency

    maps, meta = read_saliency(Path(args.saliency))
    report = class_sensitivity(maps, list(meta["class_names"]))
    report.insert(0, "dataset", meta["dataset"])
    if args.out:
        atomic.write_text(args.out, report.to_csv(index=False, float_format="%.4f"))
    print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    overall = float(report["mean_correlation"].iloc[-1])
    if len(meta["class_names"]) < 2:
        print("one class: no two classes' maps to compare")
    else:
        verdict = "the class text steers the map" if overall < 0.5 else "the maps look alike whatever the class: check the CLIP and the prompts"
        print(f"mean correlation between two classes' saliency maps of one image: {overall:.3f} ({verdict})")


def _masks(crf_path: str) -> dict[tuple[str, int], Any]:
    import pyarrow.parquet as pq

    from samdpo.prompts.tables import unpack_mask

    if not Path(crf_path).is_file():
        raise DataError(f"{crf_path}: no CRF prompt table; run the crf rule first")
    rows = pq.read_table(crf_path, columns=["sample_id", "class_index", "mask", "mask_shape"]).to_pylist()
    return {(row["sample_id"], row["class_index"]): unpack_mask(row) for row in rows}


def _answer_settings(settings: Any, modality: str) -> dict[str, Any]:
    """The settings that decide the answers (provenance and settings hash); ``openai.workers`` does not."""
    used = {key: value for key, value in vars(settings).items() if key != "openai"}
    if settings.backend == "openai":
        used["openai"] = {key: value for key, value in settings.openai.items() if key != "workers"}
    return {**used, "modality": modality}


def _workers(settings: Any) -> int:
    """Questions in flight: ``openai.workers`` for the openai backend, one otherwise."""
    return int(settings.openai.get("workers", 4)) if settings.backend == "openai" else 1


def _write_answers(step: str, table: Any, args: argparse.Namespace, dataset: str, backend: Any, settings: Any, cache: Any, **extra: Any) -> None:
    """Write a VQA / LLM table with its provenance (backend, model, settings and their hash, questions
    asked and reused; ``extra`` joins the hash) and say what was asked."""
    from samdpo.prompts.tables import write_table

    used = _answer_settings(settings, args.modality)
    meta = {"dataset": dataset, "backend": backend.backend, "model": backend.model, "settings": used, **extra}
    meta |= {"settings_hash": settings_hash(backend.model, used, *extra.values()), "asked": cache.asked, "reused": cache.reused}
    write_table(table, Path(args.out), meta)
    print(f"{step}: {table.num_rows} answers in {args.out}; questions asked {cache.asked}, answered from the cache {cache.reused}", file=sys.stderr)


def _vqa(args: argparse.Namespace) -> None:
    from samdpo.data.store import SampleStore
    from samdpo.prompts.text.answer_cache import AnswerCache
    from samdpo.prompts.store import table_meta
    from samdpo.prompts.text.vqa import VqaSettings, make_backend, make_questions, vqa_table

    _threads(args.threads)
    store = SampleStore(Path(args.store))
    settings = _settings(VqaSettings, json_object(args.settings, "--settings"), "vqa")
    geometry = settings.backend == "geometry"
    backend = make_backend(settings, _masks(args.crf) if geometry else None)
    ids = list(store.samples["sample_id"])
    questions = make_questions(ids, list(store.class_names), settings.questions, args.modality)
    with AnswerCache(args.cache) as cache:
        table = vqa_table(store.images(), questions, backend, cache, workers=_workers(settings), progress=not args.no_progress)
        visual = table_meta(Path(args.crf))["settings_hash"] if geometry else None
        _write_answers("vqa", table, args, store.kind, backend, settings, cache, visual_settings_hash=visual)


def _llm(args: argparse.Namespace) -> None:
    from samdpo.data.store import SampleStore
    from samdpo.prompts.text.answer_cache import AnswerCache
    from samdpo.prompts.text.llm import LlmSettings, llm_table, make_backend, make_requests

    store = SampleStore(Path(args.store))
    settings = _settings(LlmSettings, json_object(args.settings, "--settings"), "llm")
    backend = make_backend(settings)
    requests = make_requests(list(store.class_names), args.modality, settings.prompt)
    with AnswerCache(args.cache) as cache:
        table = llm_table(requests, backend, cache, workers=_workers(settings), progress=not args.no_progress)
        _write_answers("llm", table, args, store.kind, backend, settings, cache)


def _store(args: argparse.Namespace) -> None:
    import time

    from samdpo.data.store import SampleStore
    from samdpo.prompts.store import merge_prompt_store
    from samdpo.prompts.visual.saliency_files import read_saliency

    store = SampleStore(Path(args.store))
    start = time.perf_counter()
    report = merge_prompt_store(
        store.images(),
        list(store.samples["sample_id"]),
        list(store.class_names),
        store.kind,
        read_saliency(Path(args.saliency)),
        Path(args.crf),
        Path(args.vqa),
        Path(args.llm),
        Path(args.out),
        saliency_size=args.saliency_size,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    print(
        f"prompt store: {report.images} files, {report.rows} rows, {report.bytes / report.images / 1024:.1f} KiB per image, "
        f"{report.images / seconds:.0f} images/s, in {args.out}",
        file=sys.stderr,
    )


def _show(args: argparse.Namespace) -> None:
    from samdpo.prompts.store_view import show

    print(show(Path(args.file), as_json=args.json, png=Path(args.png) if args.png else None, classes=args.classes))


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``clip`` and ``prompts`` on the ``samdpo`` parser."""
    clip = commands.add_parser("clip", help="the embedded default's CLIP").add_subparsers(dest="action", required=True)
    pretrain = clip.add_parser("pretrain", help="pretrain the small CLIP on its own synthetic corpus")
    pretrain.add_argument("--out", required=True, help="local-dir folder to write")
    pretrain.add_argument("--settings", help="clip.pretrain settings as a JSON object")
    pretrain.add_argument("--threads", type=int, default=1)
    pretrain.set_defaults(func=_pretrain)

    prompts = commands.add_parser("prompts", help="prompts generated without humans").add_subparsers(dest="action", required=True)
    saliency = prompts.add_parser("saliency", help="CLIP + gScoreCAM saliency per (image, class)")
    saliency.add_argument("--store", required=True, help="prepared sample store folder")
    saliency.add_argument("--out", required=True, help="folder for saliency.npy + saliency.json")
    saliency.add_argument("--clip", required=True, help="hf-hub:org/name or local-dir:/path")
    saliency.add_argument("--prompts", help='{"template": "... {modality} ... {name} ...", "negatives": [...]}')
    saliency.add_argument("--settings", help="saliency settings as a JSON object")
    saliency.add_argument("--threads", type=int, default=1)
    saliency.add_argument("--no-progress", action="store_true")
    saliency.set_defaults(func=_saliency)

    crf = prompts.add_parser("crf", help="dense CRF masks, boxes and points from the saliency")
    crf.add_argument("--store", required=True)
    crf.add_argument("--saliency", required=True, help="folder written by `prompts saliency`")
    crf.add_argument("--out", required=True, help="crf.parquet to write")
    crf.add_argument("--crf", help="CRF settings as a JSON object")
    crf.add_argument("--boxes", help='box settings as a JSON object, with optional "by_class": {name: {...}}')
    crf.add_argument("--prior", help="anatomy_prior.npz: multiply each saliency map by the class's prior first")
    crf.add_argument("--threads", type=int, default=1, help="worker processes")
    crf.add_argument("--no-progress", action="store_true")
    crf.set_defaults(func=_crf)

    anatomy = prompts.add_parser("anatomy-prior", help="fit where each class lies in the body outline's frame, on the labelled split")
    anatomy.add_argument("--store", required=True)
    anatomy.add_argument("--splits", required=True, help="split table (case_id,split): only labelled cases are read")
    anatomy.add_argument("--settings", help="anatomy settings as a JSON object")
    anatomy.add_argument("--out", required=True, help="anatomy_prior.npz to write")
    anatomy.set_defaults(func=_anatomy_prior)

    refine = prompts.add_parser("refine", help="refine the CRF boxes with the pretrained SAM (box -> mask -> box), no labels")
    refine.add_argument("--store", required=True)
    refine.add_argument("--saliency", required=True, help="folder written by `prompts saliency` (point placement)")
    refine.add_argument("--crf", required=True, help="crf.parquet")
    refine.add_argument("--embeddings", required=True, help="folder of the SAM encoder's image embeddings (embed-images)")
    refine.add_argument("--sam", help="sam settings as a JSON object")
    refine.add_argument("--boxes", help="box settings as a JSON object (as for `prompts crf`)")
    refine.add_argument("--settings", help="refine settings as a JSON object")
    refine.add_argument("--out", required=True, help="refined.parquet to write")
    refine.add_argument("--threads", type=int, default=1)
    refine.add_argument("--no-progress", action="store_true")
    refine.set_defaults(func=_refine)

    check = prompts.add_parser("saliency-check", help="prompt sanity: mean correlation between classes' saliency maps of an image")
    check.add_argument("--saliency", required=True, help="folder written by `prompts saliency`")
    check.add_argument("--out", help="also write the table as CSV")
    check.set_defaults(func=_saliency_check)


    text_common = argparse.ArgumentParser(add_help=False)
    text_common.add_argument("--store", required=True, help="prepared sample store folder")
    text_common.add_argument("--out", required=True, help="Parquet table to write")
    text_common.add_argument("--modality", required=True, help='modality named in questions, e.g. "abdominal CT"')
    text_common.add_argument("--settings", help="the config section as a JSON object")
    text_common.add_argument("--cache", default="prompts_cache/answers", help="answer cache folder (diskcache)")
    text_common.add_argument("--no-progress", action="store_true")
    vqa = prompts.add_parser("vqa", parents=[text_common], help="VQA answers (shape, location) per image and class")
    vqa.add_argument("--crf", help="crf.parquet (the geometry backend reads its masks)")
    vqa.add_argument("--threads", type=int, default=1, help="torch threads (transformers backend)")
    vqa.set_defaults(func=_vqa)
    llm = prompts.add_parser("llm", parents=[text_common], help="an LLM description per class")
    llm.set_defaults(func=_llm)

    merge = prompts.add_parser("store", help="merge every prompt into one Parquet file per image")
    merge.add_argument("--store", required=True)
    merge.add_argument("--saliency", required=True, help="folder written by `prompts saliency`")
    merge.add_argument("--crf", required=True)
    merge.add_argument("--vqa", required=True)
    merge.add_argument("--llm", required=True)
    merge.add_argument("--out", required=True, help="folder to write: {out}/{image_id}.parquet")
    merge.add_argument("--saliency-size", type=int, help="side of the stored saliency grid (default: as computed)")
    merge.add_argument("--no-progress", action="store_true")
    merge.set_defaults(func=_store)

    show = prompts.add_parser("show", help="print one image's prompt file; --json, --png to draw it")
    show.add_argument("file", help="prompts_cache/{dataset}/{image_id}.parquet")
    show.add_argument("--json", action="store_true", help="print JSON (arrays summarised)")
    show.add_argument("--png", help="also draw the image with saliency, CRF outline, box, points and texts")
    show.add_argument("--classes", nargs="+", help="only these classes")
    show.set_defaults(func=_show)
