"""The work of ``samdpo train ...``, from folders on disk to folders on disk: text and image
embeddings of a store, stage-1 training, and the probability maps of a trained or zero-shot SAM.

Each step returns the line its command prints (what it wrote, and where).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from samdpo.errors import ConfigError
from samdpo.sam.engine import attach_engine
from samdpo.sam.specs import build_model, resolve_sam
from samdpo.sam.trainable import default_parts
from samdpo.settings import parse_settings

#: Prompt switches of the zero-shot SAM: the box alone.
BOX_ONLY = {"box": True, "points": False, "vqa": False, "llm": False}


def store_prompts(
    store_dir: Path | str, prompts_dir: Path | str, samples: list[int] | None = None
) -> tuple[Any, list, list[int]]:
    """The sample store, the prompts of the chosen samples (all by default) and their indices."""
    from samdpo.data.store import SampleStore
    from samdpo.train.prompt_data import load_image_prompts

    store = SampleStore(Path(store_dir))
    indices = list(range(len(store))) if samples is None else samples
    ids = list(store.samples["sample_id"])
    prompts = [load_image_prompts(Path(prompts_dir), ids[i], store.class_names) for i in indices]
    return store, prompts, indices


def embed_store_texts(
    store_dir: Path | str, prompts_dir: Path | str, clip_id: str, out: Path | str, progress: bool
) -> str:
    """CLIP embeddings of every distinct VQA and LLM text of a prompt store, written to ``out`` (Parquet)."""
    from samdpo.clip.loader import load_clip
    from samdpo.train.text_embeddings import embed_texts, write_text_embeddings

    _, prompts, _ = store_prompts(store_dir, prompts_dir)
    texts = sorted({text for image in prompts for text in (*image.vqa, *image.llm)})
    embeddings = embed_texts(load_clip(clip_id), texts, progress=progress)
    # the most point prompts of any (image, class): every prompt of a run is padded to it
    points = max(int((image.point_labels >= 0).sum(1).max()) for image in prompts)
    meta = {"clip": clip_id, "dim": int(embeddings.shape[1]), "texts": len(texts), "max_points": points}
    write_text_embeddings(Path(out), texts, embeddings, meta)
    return f"{len(texts)} distinct texts embedded ({embeddings.shape[1]} dims) by {clip_id} in {out}"


def embed_store_images(store_dir: Path | str, sam_values: Mapping[str, Any], out: Path | str, progress: bool) -> str:
    """The frozen SAM encoder's float16 embedding of every image of a store, written to ``out``."""
    from samdpo.data.store import SampleStore
    from samdpo.sam.image_embeddings import write_image_embeddings

    store = SampleStore(Path(store_dir))
    sam = resolve_sam(dict(sam_values), store.image_size)
    model = attach_engine(build_model(sam, 1, {}, 0), sam)
    ids = list(store.samples["sample_id"])
    shape = write_image_embeddings(
        Path(out), model, store.images(), ids, {"sam": sam, "dataset": store.kind}, progress=progress
    )
    mib = 2 * math.prod(shape) / 2**20
    return f"{shape[0]} images embedded by {sam['name']} into {out} ({tuple(shape[1:])} float16 each, {mib:.0f} MiB)"


def _text_hash(text: str) -> str:
    """SHA-256 (16 hex) of a text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    """SHA-256 (16 hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def stage1_settings(values: Mapping[str, Any], sam_name: str) -> tuple[Any, dict[str, Any]]:
    """The stage1 section -> (Stage1Settings, its ``prompts`` switches); ``train`` null = the SAM's default parts."""
    from samdpo.train.stage1 import Stage1Settings

    values = dict(values)
    switches = values.pop("prompts", {}) or {}
    if values.get("train") is None:
        values["train"] = default_parts(sam_name)
    return parse_settings(Stage1Settings, values, "stage1"), switches


def run_stage1(
    store_dir: Path | str,
    splits: Path | str,
    prompts_dir: Path | str,
    texts_path: Path | str,
    out: Path | str,
    embeddings_dir: str | None,
    sam_values: Mapping[str, Any],
    values: Mapping[str, Any],
    with_unlabeled: bool,
    progress: bool,
) -> None:
    """Stage 1 on the labelled split (+ the unlabelled one with ``with_unlabeled``): ``values`` is the
    stage1 section with its ``prompts`` switches; ``stage1.train`` null = the SAM's default parts."""
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.stage1 import ValidationSet, train_stage1
    from samdpo.train.text_embeddings import read_text_embeddings

    chosen_splits = ["labeled"] + (["unlabeled"] if with_unlabeled else [])
    labelled = split_indices(SampleStore(Path(store_dir)), splits, chosen_splits)
    store, prompts, indices = store_prompts(store_dir, prompts_dir, labelled)
    _, val_prompts, val_indices = store_prompts(store_dir, prompts_dir, split_indices(store, splits, ["validation"]))
    texts, text_meta = read_text_embeddings(Path(texts_path))
    sam = resolve_sam(dict(sam_values), store.image_size)
    settings, switches = stage1_settings(values, sam["name"])
    ids = list(store.samples["sample_id"])
    spec = {
        "sam": sam,
        "text_dim": text_meta["dim"],
        "clip": text_meta["clip"],
        "point_count": text_meta["max_points"],
        "switches": switches,
        "stage1": asdict(settings),
        "splits": chosen_splits,
        # what the weights were trained on: a checkpoint of other data is never resumed
        "data": {
            "samples": _text_hash("\n".join(ids[i] for i in indices)),
            "text_embeddings": _file_hash(Path(texts_path)),
            "prompt_settings": _file_hash(Path(prompts_dir) / "_settings.json"),
        },
    }
    model = build_model(sam, text_meta["dim"], switches, settings.seed)
    images, labels = store.images()[indices], store.labels()[indices]  # labels of the training splits only
    validation = ValidationSet(  # the selection split: its labels choose the epoch, nothing trains on them
        store.images()[val_indices],
        store.labels()[val_indices],
        val_prompts,
        load_embeddings(embeddings_dir, model, [ids[i] for i in val_indices]),
    )
    train_stage1(
        model,
        images,
        labels,
        prompts,
        texts,
        settings,
        Path(out),
        spec,
        text_meta["max_points"],
        progress=progress,
        embeddings=load_embeddings(embeddings_dir, model, [ids[i] for i in indices]),
        validation=validation,
    )


def run_predict(
    store_dir: Path | str,
    splits: Path | str,
    prompts_dir: Path | str,
    texts_path: Path | str,
    model_dir: Path | str,
    out: Path | str,
    embeddings_dir: str | None,
    splits_to_predict: list[str],
    device_name: str,
    progress: bool,
    settings: Any = None,
) -> str:
    """The probability maps (probs.npy, probs.json) of a trained stage-1 or stage-2 model on ``splits_to_predict``;
    ``settings``: :class:`~samdpo.train.predict_settings.PredictSettings` (None: the defaults, independent slices)."""
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore
    from samdpo.devices import pick_device
    from samdpo.predictions import write_predictions
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.predict_settings import PredictSettings
    from samdpo.train.text_embeddings import read_text_embeddings

    settings = settings or PredictSettings()
    model, spec = load_trained_model(model_dir)
    chosen = split_indices(SampleStore(Path(store_dir)), splits, splits_to_predict)
    store, prompts, indices = store_prompts(store_dir, prompts_dir, chosen)
    texts, text_meta = read_text_embeddings(Path(texts_path))
    if text_meta["clip"] != spec["clip"] or text_meta["dim"] != spec["text_dim"]:
        raise ConfigError(
            f"{texts_path}: embedded by {text_meta['clip']}, "
            f"but the model in {model_dir} was trained with {spec['clip']}"
        )
    images = store.images()[indices]
    device = pick_device(device_name)
    ids = list(store.samples["sample_id"])
    embeddings = load_embeddings(embeddings_dir, model, [ids[i] for i in indices])
    samples = store.samples.iloc[indices]

    def fill(probs: Any) -> None:
        predict_into(model, spec, images, prompts, texts, samples, settings, device, probs, embeddings, progress)

    write_predictions(
        Path(out), store, indices, Path(splits), splits_to_predict, Path(model_dir), spec["settings_hash"], fill
    )
    return f"probabilities of {len(indices)} images x {len(store.class_names)} classes ({settings.volume}) in {out}"


def load_trained_model(model_dir: Path | str) -> tuple[Any, dict[str, Any]]:
    """A trained stage-1 or stage-2 model folder -> (PromptedSam with its weights and inference engine, its spec)."""
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.train.model_folder import WEIGHTS, read_model_spec

    spec = read_model_spec(model_dir)
    model = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    load_checkpoint(model, Path(model_dir) / WEIGHTS)
    attach_engine(model, spec["sam"])
    return model, spec


def predict_into(
    model: Any,
    spec: Mapping[str, Any],
    images: Any,
    prompts: list,
    texts: Mapping[str, Any],
    samples: Any,
    settings: Any,
    device: Any,
    probs: Any,
    embeddings: Any,
    progress: bool,
) -> None:
    """Fill ``probs`` (N, T, S, S) uint8 with the model's probabilities x 255 of ``images`` (N, S, S) and their
    ``prompts``, slice by slice or (``settings.volume`` propagate) along each volume of ``samples`` (the N
    rows of the sample table: ``case_id``, ``slice_index``)."""
    from samdpo.train.predict import predict_probabilities, predict_volumes

    given = (model, images, prompts, texts, device, probs, spec["point_count"])
    if settings.volume == "propagate":
        volumes = (list(samples["case_id"]), list(samples["slice_index"]), settings.margin)
        predict_volumes(*given, *volumes, progress=progress, embeddings=embeddings)
    else:
        predict_probabilities(*given, progress=progress, embeddings=embeddings)


def run_zero_shot(
    store_dir: Path | str,
    splits: Path | str,
    prompts_dir: str | None,
    sam_values: Mapping[str, Any],
    boxes_from: str,
    out: Path | str,
    embeddings_dir: str | None,
    splits_to_predict: list[str],
    device_name: str,
    progress: bool,
) -> str:
    """The pretrained SAM's probability maps with box prompts alone: the prompt store's human-free
    boxes (``boxes_from`` cam) or, as an oracle row of the test split, the labels' boxes (gt)."""
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore
    from samdpo.devices import pick_device
    from samdpo.fingerprint import spec_hash
    from samdpo.predictions import write_predictions
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.train.zero_shot import ground_truth_boxes, predict_boxes, prompt_boxes

    if boxes_from == "gt" and splits_to_predict != ["test"]:
        raise ConfigError(
            "--boxes gt reads ground truth: it predicts the test split only (an oracle row for evaluation)"
        )
    if boxes_from == "cam" and not prompts_dir:
        raise ConfigError(
            "--boxes cam reads the prompt store's human-free boxes: give --prompts prompts_cache/{dataset}"
        )
    store = SampleStore(Path(store_dir))
    chosen = split_indices(store, splits, splits_to_predict)
    sam = resolve_sam(dict(sam_values), store.image_size)
    model = attach_engine(build_model(sam, 1, BOX_ONLY, 0), sam)
    ids = list(store.samples["sample_id"])
    if boxes_from == "gt":
        boxes, has_box = ground_truth_boxes(
            store.labels()[chosen], len(store.class_names)
        )  # the oracle reads test labels
    else:
        boxes, has_box = prompt_boxes(store_prompts(store_dir, prompts_dir, chosen)[1])
    embeddings = load_embeddings(embeddings_dir, model, [ids[i] for i in chosen])
    images = store.images()[chosen]
    device = pick_device(device_name)

    def fill(probs: Any) -> None:
        predict_boxes(model, images, boxes, has_box, device, probs, embeddings=embeddings, progress=progress)

    which = "ground-truth (oracle)" if boxes_from == "gt" else "human-free (prompt store)"
    source = f"zero-shot {sam['name']} with {which} boxes"
    settings_hash = spec_hash({"sam": sam, "boxes": boxes_from})
    write_predictions(Path(out), store, chosen, Path(splits), splits_to_predict, Path(source), settings_hash, fill)
    return f"{source}: {int(has_box.sum())} boxed (image, class) pairs of {has_box.size} in {out}"
