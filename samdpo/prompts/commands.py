"""``samdpo clip ...`` and ``samdpo prompts ...``: thin command-line entry points."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samdpo.devices import set_threads
from samdpo.settings import json_object, parse_settings


def _pretrain(args: argparse.Namespace) -> None:
    from samdpo.clip.pretrain import PretrainSettings, pretrain

    set_threads(args.threads)
    settings = parse_settings(PretrainSettings, json_object(args.settings, "--settings"), "clip.pretrain")
    history = pretrain(settings, Path(args.out))
    print(f"pretrained CLIP saved to {args.out}: final {history[-1]}", file=sys.stderr)


def _saliency(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.saliency import SaliencySettings
    from samdpo.prompts.visual.steps import run_saliency

    set_threads(args.threads)
    settings = parse_settings(SaliencySettings, json_object(args.settings, "--settings"), "saliency")
    prompts = json_object(args.prompts, "--prompts")
    print(run_saliency(args.store, args.out, args.clip, prompts, settings, not args.no_progress), file=sys.stderr)


def _crf(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.crf import CrfSettings
    from samdpo.prompts.visual.steps import run_crf

    crf = parse_settings(CrfSettings, json_object(args.crf, "--crf"), "crf")
    boxes = json_object(args.boxes, "--boxes")
    line = run_crf(args.store, args.saliency, args.out, crf, boxes, args.prior, args.threads, not args.no_progress)
    print(line, file=sys.stderr)


def _anatomy_prior(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.anatomy import AnatomySettings
    from samdpo.prompts.visual.steps import run_anatomy_prior

    settings = parse_settings(AnatomySettings, json_object(args.settings, "--settings"), "anatomy")
    print(run_anatomy_prior(args.store, args.splits, args.out, settings), file=sys.stderr)


def _presence_prior(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.presence import PresenceSettings
    from samdpo.prompts.visual.steps import run_presence_prior

    settings = parse_settings(PresenceSettings, json_object(args.settings, "--settings"), "presence")
    print(run_presence_prior(args.store, args.splits, args.out, settings), file=sys.stderr)


def _refine(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.refine import RefineSettings
    from samdpo.prompts.visual.steps import run_refine

    set_threads(args.threads)
    settings = parse_settings(RefineSettings, json_object(args.settings, "--settings"), "refine")
    sam, boxes = json_object(args.sam, "--sam"), json_object(args.boxes, "--boxes")
    line = run_refine(
        args.store, args.saliency, args.crf, args.embeddings, sam, boxes, settings, args.out, not args.no_progress
    )
    print(line, file=sys.stderr)


def _saliency_check(args: argparse.Namespace) -> None:
    from samdpo.prompts.visual.steps import saliency_check

    print(saliency_check(args.saliency, args.out))


def _vqa(args: argparse.Namespace) -> None:
    from samdpo.prompts.text.steps import run_vqa
    from samdpo.prompts.text.vqa import VqaSettings

    set_threads(args.threads)
    settings = parse_settings(VqaSettings, json_object(args.settings, "--settings"), "vqa")
    run_vqa(args.store, args.out, args.modality, settings, args.cache, args.crf, not args.no_progress)


def _llm(args: argparse.Namespace) -> None:
    from samdpo.prompts.text.llm import LlmSettings
    from samdpo.prompts.text.steps import run_llm

    settings = parse_settings(LlmSettings, json_object(args.settings, "--settings"), "llm")
    run_llm(args.store, args.out, args.modality, settings, args.cache, not args.no_progress)


def _store(args: argparse.Namespace) -> None:
    from samdpo.prompts.steps import run_store

    line = run_store(
        args.store,
        args.saliency,
        args.crf,
        args.vqa,
        args.llm,
        args.out,
        args.saliency_size,
        not args.no_progress,
        presence=args.presence,
    )
    print(line, file=sys.stderr)


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

    prompts = commands.add_parser("prompts", help="prompts generated without humans").add_subparsers(
        dest="action", required=True
    )
    add_visual_commands(prompts)
    add_text_and_store_commands(prompts)


def add_visual_commands(prompts: argparse._SubParsersAction) -> None:
    """Register ``prompts saliency | crf | anatomy-prior | presence-prior | refine | saliency-check``."""
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

    anatomy = prompts.add_parser(
        "anatomy-prior", help="fit where each class lies in the body outline's frame, on the labelled split"
    )
    anatomy.add_argument("--store", required=True)
    anatomy.add_argument("--splits", required=True, help="split table (case_id,split): only labelled cases are read")
    anatomy.add_argument("--settings", help="anatomy settings as a JSON object")
    anatomy.add_argument("--out", required=True, help="anatomy_prior.npz to write")
    anatomy.set_defaults(func=_anatomy_prior)

    presence = prompts.add_parser(
        "presence-prior", help="fit where along the scan each class occurs (presence per slice), on the labelled split"
    )
    presence.add_argument("--store", required=True)
    presence.add_argument("--splits", required=True, help="split table (case_id,split): only labelled cases are read")
    presence.add_argument("--settings", help="presence settings as a JSON object")
    presence.add_argument("--out", required=True, help="presence_prior.json to write")
    presence.set_defaults(func=_presence_prior)

    refine = prompts.add_parser(
        "refine", help="refine the CRF boxes with the pretrained SAM (box -> mask -> box), no labels"
    )
    refine.add_argument("--store", required=True)
    refine.add_argument("--saliency", required=True, help="folder written by `prompts saliency` (point placement)")
    refine.add_argument("--crf", required=True, help="crf.parquet")
    refine.add_argument(
        "--embeddings", required=True, help="folder of the SAM encoder's image embeddings (embed-images)"
    )
    refine.add_argument("--sam", help="sam settings as a JSON object")
    refine.add_argument("--boxes", help="box settings as a JSON object (as for `prompts crf`)")
    refine.add_argument("--settings", help="refine settings as a JSON object")
    refine.add_argument("--out", required=True, help="refined.parquet to write")
    refine.add_argument("--threads", type=int, default=1)
    refine.add_argument("--no-progress", action="store_true")
    refine.set_defaults(func=_refine)

    check = prompts.add_parser(
        "saliency-check", help="prompt sanity: mean correlation between classes' saliency maps of an image"
    )
    check.add_argument("--saliency", required=True, help="folder written by `prompts saliency`")
    check.add_argument("--out", help="also write the table as CSV")
    check.set_defaults(func=_saliency_check)


def add_text_and_store_commands(prompts: argparse._SubParsersAction) -> None:
    """Register ``prompts vqa | llm | store | show``."""
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
    merge.add_argument("--presence", help="presence_prior.json: keep the box of a (slice, class) only where present")
    merge.add_argument("--saliency-size", type=int, help="side of the stored saliency grid (default: as computed)")
    merge.add_argument("--no-progress", action="store_true")
    merge.set_defaults(func=_store)

    show = prompts.add_parser("show", help="print one image's prompt file; --json, --png to draw it")
    show.add_argument("file", help="prompts_cache/{dataset}/{image_id}.parquet")
    show.add_argument("--json", action="store_true", help="print JSON (arrays summarised)")
    show.add_argument("--png", help="also draw the image with saliency, CRF outline, box, points and texts")
    show.add_argument("--classes", nargs="+", help="only these classes")
    show.set_defaults(func=_show)
