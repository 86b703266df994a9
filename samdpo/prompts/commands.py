"""``samdpo clip ...`` and ``samdpo prompts ...``: thin command-line entry points."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from samdpo.errors import ConfigError, DataError
from samdpo.jsonarg import json_object


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
    from samdpo.prompts.clip_pretrain import PretrainSettings, pretrain

    _threads(args.threads)
    history = pretrain(_settings(PretrainSettings, json_object(args.settings, "--settings"), "clip.pretrain"), Path(args.out))
    print(f"pretrained CLIP saved to {args.out}: final {history[-1]}", file=sys.stderr)


def _saliency(args: argparse.Namespace) -> None:
    from samdpo.data.store import SampleStore
    from samdpo.prompts.captions import background_prompt, zero_shot_prompt
    from samdpo.prompts.clip_loader import load_clip
    from samdpo.prompts.saliency import SaliencyEngine, SaliencySettings
    from samdpo.prompts.visual import write_saliency

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


def _crf(args: argparse.Namespace) -> None:
    from samdpo.data.store import SampleStore
    from samdpo.prompts.boxes import BoxSettings
    from samdpo.prompts.crf import CrfSettings
    from samdpo.prompts.visual import crf_table, read_saliency, write_table

    store = SampleStore(Path(args.store))
    maps, meta = read_saliency(Path(args.saliency))
    if meta["sample_ids"] != list(store.samples["sample_id"]):
        raise ConfigError(f"{args.saliency}: saliency maps were made for other samples than {args.store}")
    crf = _settings(CrfSettings, json_object(args.crf, "--crf"), "crf")
    box_values = json_object(args.boxes, "--boxes")
    by_class = box_values.pop("by_class", {}) or {}  # shared by all datasets: names of other datasets' classes are fine
    boxes = {name: _settings(BoxSettings, {**box_values, **by_class.get(name, {})}, "boxes") for name in store.class_names}
    table = crf_table(
        store.images(), maps, meta["sample_ids"], meta["class_names"], crf, boxes, workers=args.threads, progress=not args.no_progress
    )
    provenance = {
        "dataset": store.kind,
        "saliency_settings_hash": meta["settings_hash"],
        "clip": meta["clip"],
        "crf": vars(crf),
        "boxes": {name: vars(b) for name, b in boxes.items()},
        "settings_hash": settings_hash(meta["settings_hash"], vars(crf), {n: vars(b) for n, b in boxes.items()}),
    }
    write_table(table, Path(args.out), provenance)
    print(f"CRF prompts: {table.num_rows} rows, {sum(table.column('has_box').to_pylist())} with a box, in {args.out}", file=sys.stderr)


def _box_quality(args: argparse.Namespace) -> None:
    import pyarrow.parquet as pq

    from samdpo import atomic
    from samdpo.data.splits import read_splits
    from samdpo.data.store import SampleStore
    from samdpo.prompts.box_quality import box_quality

    store = SampleStore(Path(args.store))
    if not Path(args.crf).is_file():
        raise DataError(f"{args.crf}: no CRF prompt table; run the crf rule first")
    table = pq.read_table(args.crf, columns=["sample_id", "class_index", "box"]).to_pandas()
    table["box"] = [None if b is None else tuple(b) for b in table["box"]]
    report = box_quality(store.labels(), store.samples, read_splits(Path(args.splits)), table, list(store.class_names))
    report.insert(0, "dataset", store.kind)
    if args.out:
        atomic.write_text(args.out, report.to_csv(index=False, float_format="%.4f"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


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
    crf.add_argument("--threads", type=int, default=1, help="worker processes")
    crf.add_argument("--no-progress", action="store_true")
    crf.set_defaults(func=_crf)

    quality = prompts.add_parser("box-quality", help="median IoU of CRF boxes with ground-truth boxes (test split)")
    quality.add_argument("--store", required=True)
    quality.add_argument("--splits", required=True)
    quality.add_argument("--crf", required=True, help="crf.parquet")
    quality.add_argument("--out", help="also write the table as CSV")
    quality.set_defaults(func=_box_quality)
