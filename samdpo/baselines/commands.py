"""``samdpo unet ...`` and ``samdpo nnunet ...``: train the U-Net and nnU-Net baselines and write their probability
maps (thin entry points)."""

from __future__ import annotations

import argparse
import sys

from samdpo.data.splits import SPLITS
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


def _nnunet_settings(args: argparse.Namespace):
    from samdpo.baselines.nnunet_settings import NnunetSettings

    return parse_settings(NnunetSettings, json_object(args.settings, "--settings"), "nnunet")


def _nnunet_prepare(args: argparse.Namespace) -> None:
    from samdpo.baselines.steps import run_prepare_nnunet

    settings = _nnunet_settings(args)
    print(run_prepare_nnunet(args.store, args.splits, args.root, settings, not args.no_progress), file=sys.stderr)


def _nnunet_train(args: argparse.Namespace) -> None:
    from samdpo.baselines.steps import run_train_nnunet

    set_threads(args.threads)
    print(run_train_nnunet(args.store, args.splits, args.root, _nnunet_settings(args)), file=sys.stderr)


def _nnunet_predict(args: argparse.Namespace) -> None:
    from samdpo.baselines.steps import run_predict_nnunet

    set_threads(args.threads)
    line = run_predict_nnunet(
        args.store, args.splits, args.root, args.out, args.splits_to_predict, args.device, not args.no_progress
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
        "--splits-to-predict", nargs="+", default=["unlabeled", "test"], choices=list(SPLITS)
    )
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.add_argument("--threads", type=int, default=1)
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(func=_predict)

    nnunet = commands.add_parser("nnunet", help='the "nnU-Net (20%% labelled)" baseline (nnunetv2, 2d, fold all)')
    actions = nnunet.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", required=True, help="prepared sample store folder")
    common.add_argument("--splits", required=True, help="split table (case_id,split)")
    common.add_argument(
        "--root", required=True, help="the dataset's nnU-Net folder (nnUNet_raw, nnUNet_preprocessed, nnUNet_results)"
    )
    common.add_argument("--threads", type=int, default=1)
    common.add_argument("--no-progress", action="store_true")
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("--settings", help="nnunet settings as a JSON object (epochs, iterations_per_epoch, ...)")
    prepare = actions.add_parser(
        "prepare",
        parents=[common, settings],
        help="write the training splits in nnU-Net's raw format; run its fingerprint, planning, 2d preprocessing",
    )
    prepare.set_defaults(func=_nnunet_prepare)
    train = actions.add_parser("train", parents=[common, settings], help="train nnU-Net (2d, fold all)")
    train.set_defaults(func=_nnunet_train)
    predict = actions.add_parser(
        "predict",
        parents=[common],
        help="probability maps (probs.npy, probs.json) of the trained nnU-Net; reads no labels",
    )
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--splits-to-predict", nargs="+", default=["test"], choices=list(SPLITS))
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.set_defaults(func=_nnunet_predict)
