"""``samdpo unet ...``: train the U-Net baseline and write its probability maps (thin entry points)."""

from __future__ import annotations

import argparse
import sys

from samdpo.devices import set_threads
from samdpo.settings import json_object, parse_settings


def _train(args: argparse.Namespace) -> None:
    from samdpo.baselines.steps import run_train_unet
    from samdpo.baselines.unet_settings import UnetSettings

    set_threads(args.threads)
    settings = parse_settings(UnetSettings, json_object(args.settings, "--settings"), "unet")
    print(run_train_unet(args.store, args.splits, args.out, settings, not args.no_progress), file=sys.stderr)


def _predict(args: argparse.Namespace) -> None:
    from samdpo.baselines.steps import run_predict_unet

    set_threads(args.threads)
    line = run_predict_unet(
        args.store,
        args.splits,
        args.model,
        args.out,
        args.splits_to_predict,
        args.batch_size,
        args.device,
        not args.no_progress,
    )
    print(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``unet`` on the ``samdpo`` parser."""
    unet = commands.add_parser("unet", help='the "U-Net (20%% labelled)" baseline').add_subparsers(
        dest="action", required=True
    )
    train = unet.add_parser("train", help="train MONAI's 2D U-Net on the labels of the training splits")
    train.add_argument("--store", required=True, help="prepared sample store folder")
    train.add_argument("--splits", required=True, help="split table (case_id,split)")
    train.add_argument(
        "--out", required=True, help="output folder (model.safetensors, settings.json, loss.csv, loss.png)"
    )
    train.add_argument("--settings", help="unet settings as a JSON object (channels, strides, epochs, splits, ...)")
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    predict = unet.add_parser(
        "predict", help="probability maps (probs.npy, probs.json) of a trained U-Net; reads no labels"
    )
    predict.add_argument("--store", required=True, help="prepared sample store folder")
    predict.add_argument("--splits", required=True, help="split table (case_id,split)")
    predict.add_argument("--model", required=True, help="folder written by `unet train`")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument(
        "--splits-to-predict", nargs="+", default=["unlabeled", "test"], choices=["labeled", "unlabeled", "test"]
    )
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.add_argument("--threads", type=int, default=1)
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(func=_predict)
