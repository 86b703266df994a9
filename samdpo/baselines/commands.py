"""``samdpo unet ...``: train the U-Net baseline and write its probability maps (thin entry points)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from samdpo.settings import json_object


def _threads(count: int) -> None:
    import torch

    torch.set_num_threads(max(1, count))


def _train(args: argparse.Namespace) -> None:
    from samdpo.baselines.unet import UnetSettings, train_unet
    from samdpo.data.store import SampleStore
    from samdpo.errors import DataError
    from samdpo.data.splits import split_indices

    _threads(args.threads)
    settings = UnetSettings.from_dict(json_object(args.settings, "--settings"))
    store = SampleStore(Path(args.store))
    indices = split_indices(store, args.splits, list(settings.splits))
    if not indices:
        raise DataError(f"{args.splits}: no image of the store is in the splits {list(settings.splits)}")
    images, labels = store.images()[indices], store.labels()[indices]  # labels of the training splits only
    spec = {"model": "unet", "dataset": store.kind, "class_names": list(store.class_names)}
    train_unet(images, labels, len(store.class_names), settings, Path(args.out), spec, progress=not args.no_progress)
    print(f"U-Net trained on {len(indices)} images of the splits {', '.join(settings.splits)} in {args.out}", file=sys.stderr)


def _predict(args: argparse.Namespace) -> None:
    import torch

    from samdpo.baselines.unet import load_unet, predict_unet
    from samdpo.data.store import SampleStore
    from samdpo.errors import ConfigError, DataError
    from samdpo.data.splits import split_indices
    from samdpo.predictions import write_predictions
    from samdpo.devices import pick_device

    _threads(args.threads)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device is cuda but no GPU is visible")
    model, spec = load_unet(Path(args.model))
    store = SampleStore(Path(args.store))
    if list(spec.get("class_names", store.class_names)) != list(store.class_names) or int(spec["image_size"]) != store.image_size:
        raise DataError(
            f"{args.model}: trained on classes {spec.get('class_names')} at {spec['image_size']} px, "
            f"but {args.store} has {list(store.class_names)} at {store.image_size} px"
        )
    indices = split_indices(store, args.splits, args.splits_to_predict)
    images = store.images()[indices]
    device = pick_device(args.device)

    def fill(out: Any) -> None:
        predict_unet(model, images, device, args.batch_size, out=out, progress=not args.no_progress)

    write_predictions(Path(args.out), store, indices, Path(args.splits), args.splits_to_predict, Path(args.model), spec["settings_hash"], fill)
    print(f"U-Net probabilities of {len(indices)} images x {len(store.class_names)} classes in {args.out}", file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``unet`` on the ``samdpo`` parser."""
    unet = commands.add_parser("unet", help='the "U-Net (20%% labelled)" baseline').add_subparsers(dest="action", required=True)
    train = unet.add_parser("train", help="train MONAI's 2D U-Net on the labels of the training splits")
    train.add_argument("--store", required=True, help="prepared sample store folder")
    train.add_argument("--splits", required=True, help="split table (case_id,split)")
    train.add_argument("--out", required=True, help="output folder (model.safetensors, settings.json, loss.csv, loss.png)")
    train.add_argument("--settings", help="unet settings as a JSON object (channels, strides, epochs, splits, ...)")
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    predict = unet.add_parser("predict", help="probability maps (probs.npy, probs.json) of a trained U-Net; reads no labels")
    predict.add_argument("--store", required=True, help="prepared sample store folder")
    predict.add_argument("--splits", required=True, help="split table (case_id,split)")
    predict.add_argument("--model", required=True, help="folder written by `unet train`")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--splits-to-predict", nargs="+", default=["unlabeled", "test"], choices=["labeled", "unlabeled", "test"])
    predict.add_argument("--batch-size", type=int, default=8)
    predict.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    predict.add_argument("--threads", type=int, default=1)
    predict.add_argument("--no-progress", action="store_true")
    predict.set_defaults(func=_predict)
