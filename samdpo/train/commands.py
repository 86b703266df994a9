"""``samdpo train ...``: text embeddings, stage-1 training and prediction (thin entry points)."""

from __future__ import annotations

import argparse
import sys

from samdpo.devices import set_threads
from samdpo.settings import json_object, parse_settings


def _embed_texts(args: argparse.Namespace) -> None:
    from samdpo.train.steps import embed_store_texts

    set_threads(args.threads)
    print(embed_store_texts(args.store, args.prompts, args.clip, args.out, not args.no_progress), file=sys.stderr)


def _embed_images(args: argparse.Namespace) -> None:
    from samdpo.train.steps import embed_store_images

    set_threads(args.threads)
    sam = json_object(args.sam, "--sam")
    print(embed_store_images(args.store, sam, args.out, not args.no_progress), file=sys.stderr)


def _stage1(args: argparse.Namespace) -> None:
    from samdpo.train.steps import run_stage1

    set_threads(args.threads)
    sam, values = json_object(args.sam, "--sam"), json_object(args.settings, "--settings")
    run_stage1(
        args.store,
        args.splits,
        args.prompts,
        args.texts,
        args.out,
        args.embeddings,
        sam,
        values,
        args.with_unlabeled,
        not args.no_progress,
    )


def _predict(args: argparse.Namespace) -> None:
    from samdpo.train.predict_settings import PredictSettings
    from samdpo.train.steps import run_predict

    set_threads(args.threads)
    settings = parse_settings(PredictSettings, json_object(args.settings, "--settings"), "predict")
    line = run_predict(
        args.store,
        args.splits,
        args.prompts,
        args.texts,
        args.model,
        args.out,
        args.embeddings,
        args.splits_to_predict,
        args.device,
        not args.no_progress,
        settings,
    )
    print(line, file=sys.stderr)


def _zero_shot(args: argparse.Namespace) -> None:
    from samdpo.train.steps import run_zero_shot

    set_threads(args.threads)
    line = run_zero_shot(
        args.store,
        args.splits,
        args.prompts,
        json_object(args.sam, "--sam"),
        args.boxes,
        args.out,
        args.embeddings,
        args.splits_to_predict,
        args.device,
        not args.no_progress,
    )
    print(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``train`` on the ``samdpo`` parser."""
    train = commands.add_parser("train", help="SAM with fused prompts: stage 1 and prediction").add_subparsers(
        dest="action", required=True
    )
    texts = train.add_parser("embed-texts", help="CLIP text embeddings of every VQA and LLM text of a prompt store")
    texts.add_argument("--store", required=True, help="prepared sample store folder")
    texts.add_argument("--prompts", required=True, help="prompts_cache/{dataset}")
    texts.add_argument("--clip", required=True, help="the dataset's CLIP (hf-hub:... or local-dir:...)")
    texts.add_argument("--out", required=True, help="Parquet file to write")
    texts.add_argument("--threads", type=int, default=1)
    texts.add_argument("--no-progress", action="store_true")
    texts.set_defaults(func=_embed_texts)

    embed = train.add_parser(
        "embed-images", help="the frozen SAM encoder's embedding of every image of a store (float16 memory map)"
    )
    embed.add_argument("--store", required=True, help="prepared sample store folder")
    embed.add_argument("--sam", help="sam settings as a JSON object (name, image_size, checkpoint)")
    embed.add_argument("--out", required=True, help="folder of embeddings.npy and embeddings.json")
    embed.add_argument("--threads", type=int, default=1)
    embed.add_argument("--no-progress", action="store_true")
    embed.set_defaults(func=_embed_images)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", required=True)
    common.add_argument("--splits", required=True, help="split table (case_id,split)")
    common.add_argument("--prompts", required=True, help="prompts_cache/{dataset}")
    common.add_argument("--texts", required=True, help="text embeddings (embed-texts)")
    common.add_argument("--out", required=True, help="output folder")
    common.add_argument(
        "--embeddings", help="folder of the frozen encoder's image embeddings (embed-images); default: run the encoder"
    )
    common.add_argument("--threads", type=int, default=1)
    common.add_argument("--no-progress", action="store_true")
    stage1 = train.add_parser("stage1", parents=[common], help="train on the labelled split")
    stage1.add_argument("--sam", help="sam settings as a JSON object (name, image_size, checkpoint, ...)")
    stage1.add_argument("--settings", help='stage1 settings as a JSON object, with "prompts": {"box": ..., "vqa": ...}')
    stage1.add_argument(
        "--with-unlabeled", action="store_true", help="train on labelled + unlabelled (the 20%% baselines)"
    )
    stage1.set_defaults(func=_stage1)
    predict = train.add_parser("predict", parents=[common], help="probability maps of a trained model")
    predict.add_argument("--model", required=True, help="folder written by `train stage1`")
    predict.add_argument("--splits-to-predict", nargs="+", default=["unlabeled", "test"])
    predict.add_argument("--device", default="auto")
    predict.add_argument("--settings", help='predict settings as a JSON object ({"volume": "propagate", "margin": 2})')
    predict.set_defaults(func=_predict)
    zero = train.add_parser(
        "zero-shot",
        help="the pretrained SAM with box prompts alone (the prompt store's human-free boxes, or the test labels' "
        "boxes as an oracle)",
    )
    zero.add_argument("--store", required=True)
    zero.add_argument("--splits", required=True, help="split table (case_id,split)")
    zero.add_argument("--prompts", help="prompts_cache/{dataset} (for --boxes cam)")
    zero.add_argument("--sam", help="sam settings as a JSON object")
    zero.add_argument(
        "--boxes",
        choices=["cam", "gt"],
        required=True,
        help="cam: the prompt store's human-free boxes (CRF, SAM-refined); gt: the test labels' boxes (oracle)",
    )
    zero.add_argument(
        "--embeddings", help="folder of the frozen encoder's image embeddings (embed-images); default: run the encoder"
    )
    zero.add_argument("--splits-to-predict", nargs="+", default=["test"])
    zero.add_argument("--out", required=True, help="output folder")
    zero.add_argument("--device", default="auto")
    zero.add_argument("--threads", type=int, default=1)
    zero.add_argument("--no-progress", action="store_true")
    zero.set_defaults(func=_zero_shot)
