"""``samdpo train ...``: text embeddings, stage-1 training and prediction (thin entry points)."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from samdpo.errors import ConfigError
from samdpo.sam.specs import build_model, resolve_sam
from samdpo.sam.trainable import default_parts
from samdpo.settings import json_object


def _threads(count: int) -> None:
    """Torch CPU threads: the job's ``count``, shared by the processes torchrun starts on this machine."""
    import os

    import torch

    torch.set_num_threads(max(1, count // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))))


def _store_prompts(store_dir: str, prompts_dir: str, samples: list[int] | None = None) -> tuple[Any, list, list[int]]:
    """The sample store, the prompts of the chosen samples (all by default) and their indices."""
    from samdpo.data.store import SampleStore
    from samdpo.train.prompt_data import load_image_prompts

    store = SampleStore(Path(store_dir))
    indices = list(range(len(store))) if samples is None else samples
    ids = list(store.samples["sample_id"])
    prompts = [load_image_prompts(Path(prompts_dir), ids[i], store.class_names) for i in indices]
    return store, prompts, indices


def _embed_texts(args: argparse.Namespace) -> None:
    from samdpo.clip.loader import load_clip
    from samdpo.train.text_embeddings import embed_texts, write_text_embeddings

    _threads(args.threads)
    _, prompts, _ = _store_prompts(args.store, args.prompts)
    texts = sorted({text for image in prompts for text in (*image.vqa, *image.llm)})
    clip = load_clip(args.clip)
    embeddings = embed_texts(clip, texts, progress=not args.no_progress)
    # the most point prompts of any (image, class): every prompt of a run is padded to it
    points = max(int((image.point_labels >= 0).sum(1).max()) for image in prompts)
    meta = {"clip": args.clip, "dim": int(embeddings.shape[1]), "texts": len(texts), "max_points": points}
    write_text_embeddings(Path(args.out), texts, embeddings, meta)
    print(f"{len(texts)} distinct texts embedded ({embeddings.shape[1]} dims) by {args.clip} in {args.out}", file=sys.stderr)


def _embed_images(args: argparse.Namespace) -> None:
    from samdpo.data.store import SampleStore
    from samdpo.sam.image_embeddings import write_image_embeddings

    _threads(args.threads)
    store = SampleStore(Path(args.store))
    sam = resolve_sam(json_object(args.sam, "--sam"), store.image_size)
    model = build_model(sam, 1, {}, 0)
    shape = write_image_embeddings(
        Path(args.out), model, store.images(), list(store.samples["sample_id"]), {"sam": sam, "dataset": store.kind}, progress=not args.no_progress
    )
    mib = 2 * math.prod(shape) / 2**20
    print(f"{shape[0]} images embedded by {sam['name']} into {args.out} ({tuple(shape[1:])} float16 each, {mib:.0f} MiB)", file=sys.stderr)


def _text_hash(text: str) -> str:
    """SHA-256 (16 hex) of a text."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    """SHA-256 (16 hex) of a file's bytes."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _stage1(args: argparse.Namespace) -> None:
    from samdpo.data.splits import split_indices
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.data.store import SampleStore
    from samdpo.train.stage1 import Stage1Settings, train_stage1
    from samdpo.train.text_embeddings import read_text_embeddings

    _threads(args.threads)
    store = SampleStore(Path(args.store))
    labelled = split_indices(store, args.splits, ["labeled"] + (["unlabeled"] if args.with_unlabeled else []))
    store, prompts, indices = _store_prompts(args.store, args.prompts, labelled)
    texts, text_meta = read_text_embeddings(Path(args.texts))
    values = json_object(args.settings, "--settings")
    switches = values.pop("prompts", {}) or {}
    sam = resolve_sam(json_object(args.sam, "--sam"), store.image_size)
    if values.get("train") is None:
        values["train"] = default_parts(sam["name"])
    try:
        settings = Stage1Settings(**values)
    except TypeError as exc:
        raise ConfigError(f"bad stage1 settings: {exc}") from exc
    ids = list(store.samples["sample_id"])
    spec = {
        "sam": sam,
        "text_dim": text_meta["dim"],
        "clip": text_meta["clip"],
        "point_count": text_meta["max_points"],
        "switches": switches,
        "stage1": asdict(settings),
        "splits": ["labeled"] + (["unlabeled"] if args.with_unlabeled else []),
        # what the weights were trained on: a checkpoint of other data is never resumed
        "data": {
            "samples": _text_hash("\n".join(ids[i] for i in indices)),
            "text_embeddings": _file_hash(Path(args.texts)),
            "prompt_settings": _file_hash(Path(args.prompts) / "_settings.json"),
        },
    }
    model = build_model(sam, text_meta["dim"], switches, settings.seed)
    images, labels = store.images()[indices], store.labels()[indices]  # labels of the training splits only
    train_stage1(
        model, images, labels, prompts, texts, settings, Path(args.out), spec, text_meta["max_points"], progress=not args.no_progress,
        embeddings=load_embeddings(args.embeddings, model, [ids[i] for i in indices]),
    )


def _predict(args: argparse.Namespace) -> None:
    from samdpo.data.splits import split_indices
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.data.store import SampleStore
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.train.predict import predict_probabilities
    from samdpo.predictions import write_predictions
    from samdpo.train.model_folder import WEIGHTS
    from samdpo.train.model_folder import read_model_spec
    from samdpo.devices import pick_device
    from samdpo.train.text_embeddings import read_text_embeddings

    _threads(args.threads)
    spec = read_model_spec(args.model)
    store = SampleStore(Path(args.store))
    chosen = split_indices(store, args.splits, args.splits_to_predict)
    store, prompts, indices = _store_prompts(args.store, args.prompts, chosen)
    texts, text_meta = read_text_embeddings(Path(args.texts))
    if text_meta["clip"] != spec["clip"] or text_meta["dim"] != spec["text_dim"]:
        raise ConfigError(f"{args.texts}: embedded by {text_meta['clip']}, but the model in {args.model} was trained with {spec['clip']}")
    model = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    load_checkpoint(model, Path(args.model) / WEIGHTS)
    images = store.images()[indices]
    device = pick_device(args.device)

    ids = list(store.samples["sample_id"])
    embeddings = load_embeddings(args.embeddings, model, [ids[i] for i in indices])

    def fill(out: Any) -> None:
        predict_probabilities(model, images, prompts, texts, device, out, spec["point_count"], progress=not args.no_progress, embeddings=embeddings)

    write_predictions(Path(args.out), store, indices, Path(args.splits), args.splits_to_predict, Path(args.model), spec["settings_hash"], fill)
    print(f"probabilities of {len(indices)} images x {len(store.class_names)} classes in {args.out}", file=sys.stderr)


def _zero_shot(args: argparse.Namespace) -> None:
    from samdpo.data.splits import split_indices
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.data.store import SampleStore
    from samdpo.predictions import write_predictions
    from samdpo.fingerprint import spec_hash
    from samdpo.devices import pick_device
    from samdpo.train.zero_shot import ground_truth_boxes, predict_boxes, prompt_boxes

    _threads(args.threads)
    if args.boxes == "gt" and args.splits_to_predict != ["test"]:
        raise ConfigError("--boxes gt reads ground truth: it predicts the test split only (an oracle row for evaluation)")
    if args.boxes == "cam" and not args.prompts:
        raise ConfigError("--boxes cam reads the prompt store's human-free boxes: give --prompts prompts_cache/{dataset}")
    store = SampleStore(Path(args.store))
    chosen = split_indices(store, args.splits, args.splits_to_predict)
    sam = resolve_sam(json_object(args.sam, "--sam"), store.image_size)
    model = build_model(sam, 1, {"box": True, "points": False, "vqa": False, "llm": False}, 0)
    ids = list(store.samples["sample_id"])
    if args.boxes == "gt":
        boxes, has_box = ground_truth_boxes(store.labels()[chosen], len(store.class_names))  # the oracle reads test labels
    else:
        _, prompts, _ = _store_prompts(args.store, args.prompts, chosen)
        boxes, has_box = prompt_boxes(prompts)
    embeddings = load_embeddings(args.embeddings, model, [ids[i] for i in chosen])
    images = store.images()[chosen]
    device = pick_device(args.device)
    settings_hash = spec_hash({"sam": sam, "boxes": args.boxes})

    def fill(out: Any) -> None:
        predict_boxes(model, images, boxes, has_box, device, out, embeddings=embeddings, progress=not args.no_progress)

    source = f"zero-shot {sam['name']} with {'ground-truth (oracle)' if args.boxes == 'gt' else 'human-free (prompt store)'} boxes"
    write_predictions(Path(args.out), store, chosen, Path(args.splits), args.splits_to_predict, Path(source), settings_hash, fill)
    print(f"{source}: {int(has_box.sum())} boxed (image, class) pairs of {has_box.size} in {args.out}", file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``train`` on the ``samdpo`` parser."""
    train = commands.add_parser("train", help="SAM with fused prompts: stage 1 and prediction").add_subparsers(dest="action", required=True)
    texts = train.add_parser("embed-texts", help="CLIP text embeddings of every VQA and LLM text of a prompt store")
    texts.add_argument("--store", required=True, help="prepared sample store folder")
    texts.add_argument("--prompts", required=True, help="prompts_cache/{dataset}")
    texts.add_argument("--clip", required=True, help="the dataset's CLIP (hf-hub:... or local-dir:...)")
    texts.add_argument("--out", required=True, help="Parquet file to write")
    texts.add_argument("--threads", type=int, default=1)
    texts.add_argument("--no-progress", action="store_true")
    texts.set_defaults(func=_embed_texts)

    embed = train.add_parser("embed-images", help="the frozen SAM encoder's embedding of every image of a store (float16 memory map)")
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
    common.add_argument("--embeddings", help="folder of the frozen encoder's image embeddings (embed-images); default: run the encoder")
    common.add_argument("--threads", type=int, default=1)
    common.add_argument("--no-progress", action="store_true")
    stage1 = train.add_parser("stage1", parents=[common], help="train on the labelled split")
    stage1.add_argument("--sam", help="sam settings as a JSON object (name, image_size, checkpoint, ...)")
    stage1.add_argument("--settings", help='stage1 settings as a JSON object, with "prompts": {"box": ..., "vqa": ...}')
    stage1.add_argument("--with-unlabeled", action="store_true", help="train on labelled + unlabelled (the 20%% baselines)")
    stage1.set_defaults(func=_stage1)
    predict = train.add_parser("predict", parents=[common], help="probability maps of a trained model")
    predict.add_argument("--model", required=True, help="folder written by `train stage1`")
    predict.add_argument("--splits-to-predict", nargs="+", default=["unlabeled", "test"])
    predict.add_argument("--device", default="auto")
    predict.set_defaults(func=_predict)
    zero = train.add_parser("zero-shot", help="the pretrained SAM with box prompts alone (the prompt store's human-free boxes, or the test labels' boxes as an oracle)")
    zero.add_argument("--store", required=True)
    zero.add_argument("--splits", required=True, help="split table (case_id,split)")
    zero.add_argument("--prompts", help="prompts_cache/{dataset} (for --boxes cam)")
    zero.add_argument("--sam", help="sam settings as a JSON object")
    zero.add_argument("--boxes", choices=["cam", "gt"], required=True, help="cam: the prompt store's human-free boxes (CRF, SAM-refined); gt: the test labels' boxes (oracle)")
    zero.add_argument("--embeddings", help="folder of the frozen encoder's image embeddings (embed-images); default: run the encoder")
    zero.add_argument("--splits-to-predict", nargs="+", default=["test"])
    zero.add_argument("--out", required=True, help="output folder")
    zero.add_argument("--device", default="auto")
    zero.add_argument("--threads", type=int, default=1)
    zero.add_argument("--no-progress", action="store_true")
    zero.set_defaults(func=_zero_shot)
