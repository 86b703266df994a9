"""The work of ``samdpo unet train | predict`` and ``samdpo nnunet prepare | train | predict``: the U-Net and
nnU-Net baselines from a sample store and its split table, and their probability maps. Each step returns the
line its command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samdpo.errors import ConfigError, DataError


def run_train_unet(store_dir: Path | str, splits: Path | str, out: Path | str, settings: Any, progress: bool) -> str:
    """Train the U-Net on the images and labels of ``settings.splits``
    (:class:`~samdpo.baselines.unet_settings.UnetSettings`)."""
    from samdpo.baselines.unet import train_unet
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore

    store = SampleStore(Path(store_dir))
    indices = split_indices(store, splits, list(settings.splits))
    if not indices:
        raise DataError(f"{splits}: no image of the store is in the splits {list(settings.splits)}")
    images, labels = store.images()[indices], store.labels()[indices]  # labels of the training splits only
    chosen = split_indices(store, splits, ["validation"])
    validation = store.images()[chosen], store.labels()[chosen]  # the selection split's labels: epoch choice only
    spec = {"model": "unet", "dataset": store.kind, "class_names": list(store.class_names)}
    train_unet(images, labels, len(store.class_names), settings, Path(out), spec, validation, progress=progress)
    return (
        f"U-Net trained on {len(indices)} images of the splits {', '.join(settings.splits)}, its epoch chosen on "
        f"{len(chosen)} validation images, in {out}"
    )


def run_predict_unet(
    store_dir: Path | str,
    splits: Path | str,
    model_dir: Path | str,
    out: Path | str,
    splits_to_predict: list[str],
    batch_size: int,
    device_name: str,
    progress: bool,
) -> str:
    """The probability maps (probs.npy, probs.json) of a trained U-Net on ``splits_to_predict``; reads no labels."""
    import torch

    from samdpo.baselines.unet import load_unet, predict_unet
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore
    from samdpo.devices import pick_device
    from samdpo.predictions import write_predictions

    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device is cuda but no GPU is visible")
    model, spec = load_unet(Path(model_dir))
    store = SampleStore(Path(store_dir))
    if (
        list(spec.get("class_names", store.class_names)) != list(store.class_names)
        or int(spec["image_size"]) != store.image_size
    ):
        raise DataError(
            f"{model_dir}: trained on classes {spec.get('class_names')} at {spec['image_size']} px, "
            f"but {store_dir} has {list(store.class_names)} at {store.image_size} px"
        )
    indices = split_indices(store, splits, splits_to_predict)
    images = store.images()[indices]
    device = pick_device(device_name)

    def fill(probs: Any) -> None:
        predict_unet(model, images, device, batch_size, out=probs, progress=progress)

    write_predictions(
        Path(out), store, indices, Path(splits), splits_to_predict, Path(model_dir), spec["settings_hash"], fill
    )
    return f"U-Net probabilities of {len(indices)} images x {len(store.class_names)} classes in {out}"


def _nnunet_training_set(store_dir: Path | str, splits: Path | str, settings: Any) -> tuple[Any, list[int]]:
    """The store and the indices of the images of ``settings.splits`` (DataError when there are none)."""
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore

    store = SampleStore(Path(store_dir))
    indices = split_indices(store, splits, list(settings.splits))
    if not indices:
        raise DataError(f"{splits}: no image of the store is in the splits {list(settings.splits)}")
    return store, indices


def run_prepare_nnunet(
    store_dir: Path | str, splits: Path | str, root: Path | str, settings: Any, progress: bool
) -> str:
    """nnU-Net's raw dataset of the images and labels of ``settings.splits``
    (:class:`~samdpo.baselines.nnunet_settings.NnunetSettings`), planned and preprocessed (``2d``) under ``root``."""
    from samdpo.baselines import nnunet
    from samdpo.data.splits import split_indices

    store, indices = _nnunet_training_set(store_dir, splits, settings)
    validation = split_indices(store, splits, ["validation"])  # nnU-Net's fold-0 validation: checkpoint choice only
    rows = indices + validation
    ids = [store.samples["sample_id"][i] for i in rows]
    images, labels = store.images()[rows], store.labels()[rows]  # labels of the training and validation splits
    plan = nnunet.prepare(
        images, labels, ids, store.class_names, store.kind, Path(root), settings, progress, validation=len(validation)
    )
    return (
        f"nnU-Net dataset of {len(indices)} images of the splits {', '.join(settings.splits)} and {len(validation)} "
        f"validation images planned (2d: patch {plan['patch_size']}, batch {plan['batch_size']}) in {root}"
    )


def run_train_nnunet(store_dir: Path | str, splits: Path | str, root: Path | str, settings: Any) -> str:
    """Train nnU-Net (fold all) on the prepared dataset under ``root``."""
    from samdpo.baselines import nnunet

    store, indices = _nnunet_training_set(store_dir, splits, settings)
    spec = {
        "model": "nnunet",
        "dataset": store.kind,
        "class_names": list(store.class_names),
        "image_size": store.image_size,
        "training_images": len(indices),
    }
    folder = nnunet.train(Path(root), store.kind, settings, spec)
    return f"nnU-Net ({settings.schedule}) trained on {len(indices)} images in {folder}"


def run_predict_nnunet(
    store_dir: Path | str,
    splits: Path | str,
    root: Path | str,
    out: Path | str,
    splits_to_predict: list[str],
    device_name: str,
    progress: bool,
) -> str:
    """The probability maps (probs.npy, probs.json) of the trained nnU-Net on ``splits_to_predict``; reads no labels."""
    from samdpo.baselines import nnunet
    from samdpo.data.splits import split_indices
    from samdpo.data.store import SampleStore
    from samdpo.predictions import write_predictions

    store = SampleStore(Path(store_dir))
    folder, record = nnunet.read_model(Path(root), store.kind)
    if list(record["class_names"]) != list(store.class_names) or int(record["image_size"]) != store.image_size:
        raise DataError(
            f"{folder}: trained on classes {record['class_names']} at {record['image_size']} px, "
            f"but {store_dir} has {list(store.class_names)} at {store.image_size} px"
        )
    indices = split_indices(store, splits, splits_to_predict)
    images = store.images()[indices]
    model = nnunet.predictor(folder, device_name)

    def fill(probs: Any) -> None:
        nnunet.predict(model, images, probs, progress=progress)

    write_predictions(Path(out), store, indices, Path(splits), splits_to_predict, folder, record["settings_hash"], fill)
    return f"nnU-Net probabilities of {len(indices)} images x {len(store.class_names)} classes in {out}"
