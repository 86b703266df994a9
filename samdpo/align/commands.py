"""``samdpo align ...``: candidates, annotation and stage-2 training (thin entry points)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from samdpo.errors import ConfigError, DataError
from samdpo.align.study_commands import add_study_command
from samdpo.settings import json_object


def _candidates(args: argparse.Namespace) -> None:
    from samdpo.align.candidates import candidate_levels, check_thresholds, write_candidates
    from samdpo.predictions import read_predictions

    thresholds = check_thresholds(args.thresholds)
    folder = Path(args.probs)
    probs, meta = read_predictions(folder)
    chosen = [i for i, split in enumerate(meta.get("sample_splits") or []) if split == "unlabeled"]
    if not chosen:
        raise DataError(f"{folder}: no unlabelled image among the predicted ones")
    levels = candidate_levels(np.asarray(probs[chosen]), thresholds)
    out = {
        "dataset": meta["dataset"],
        "sample_ids": [meta["sample_ids"][i] for i in chosen],
        "class_names": meta["class_names"],
        "thresholds": list(thresholds),
        "model": meta["model"],
        "model_settings_hash": meta["model_settings_hash"],
    }
    write_candidates(Path(args.out), levels, out)
    empty = int((levels.reshape(len(chosen), len(meta["class_names"]), -1).max(2) == 0).sum())
    print(f"candidates: {len(chosen)} unlabelled images x {len(meta['class_names'])} classes x {len(thresholds)} thresholds; "
          f"{empty} (image, class) pairs with all candidates empty", file=sys.stderr)


#: The options each ``align annotate --reference`` needs besides --store and --candidates.
_REFERENCE_NEEDS = {"ground_truth": (), "prompt": ("prompts",), "uncertainty": ("model", "texts", "prompts")}


def _store_rows(store: object, meta: dict, args: argparse.Namespace) -> dict[str, int]:
    """Sample id -> row of ``--store``, after checking the ``--candidates`` are of its samples and classes."""
    index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
    if list(store.class_names) != meta["class_names"] or any(s not in index for s in meta["sample_ids"]):
        raise DataError(f"{args.candidates}: candidates of other samples or classes than {args.store}")
    return index


def _consensus(args: argparse.Namespace, store: object, sample_ids: list[str]) -> np.ndarray:
    """The stage-1 model's test-time-augmentation consensus masks of ``sample_ids`` (uncertainty reference)."""
    from samdpo.align.uncertainty import UncertaintySettings, consensus_masks
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.sam.specs import build_model
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.model_folder import WEIGHTS
    from samdpo.train.model_folder import read_model_spec
    from samdpo.devices import pick_device
    from samdpo.train.text_embeddings import read_text_embeddings

    try:
        settings = UncertaintySettings(**json_object(args.uncertainty, "--uncertainty"))
    except TypeError as exc:
        raise ConfigError(f"bad align.uncertainty settings: {exc}") from exc
    spec = read_model_spec(args.model)
    model = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    load_checkpoint(model, Path(args.model) / WEIGHTS)
    texts, _ = read_text_embeddings(Path(args.texts))
    prompts = [load_image_prompts(Path(args.prompts), s, store.class_names) for s in sample_ids]
    embeddings = load_embeddings(args.embeddings, model, sample_ids)  # None: the encoder runs here
    index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
    images = None if embeddings is not None else store.images()[[index[s] for s in sample_ids]]
    size = store.images().shape[-1]
    return consensus_masks(model, embeddings, prompts, texts, len(store.class_names), size, spec["point_count"], settings, pick_device("auto"),
                           progress=not args.no_progress, images=images)


def _annotate(args: argparse.Namespace) -> None:
    from samdpo.align.annotator import annotate_all, write_annotations
    from samdpo.align.candidates import read_candidates
    from samdpo.data.store import SampleStore

    missing = [f"--{flag}" for flag in _REFERENCE_NEEDS[args.reference] if not getattr(args, flag)]
    if missing:
        raise ConfigError(f"--reference {args.reference} needs {', '.join(missing)}")
    if args.classes == "present" and args.reference != "ground_truth":
        raise ConfigError(f"align.classes present needs to know which organs an image shows: only the ground_truth reference does ({args.reference!r}); use classes all")
    if not 0.0 <= args.noise <= 1.0:
        raise ConfigError(f"--noise (align.noise) must be in [0, 1], got {args.noise}")
    levels, meta = read_candidates(Path(args.candidates))
    store = SampleStore(Path(args.store))
    index = _store_rows(store, meta, args)
    count = len(meta["thresholds"])
    classes = len(meta["class_names"])
    ids = meta["sample_ids"]
    graded = None
    if args.reference == "ground_truth":  # the virtual annotator: labels of the candidates' (unlabelled) images only
        labels = store.labels()
        truth = [np.asarray(labels[index[sample]])[None] == np.arange(1, classes + 1)[:, None, None] for sample in ids]
        graded = np.stack([t.any(axis=(1, 2)) for t in truth]) if args.classes == "present" else None

        def references(n: int) -> np.ndarray:
            return truth[n]
    elif args.reference == "prompt":
        from samdpo.prompts.store import array, read_prompts

        def references(n: int) -> np.ndarray:
            path = Path(args.prompts) / f"{ids[n]}.parquet"
            if not path.is_file():
                raise DataError(f"{path}: no prompt file for image {ids[n]}; run the prompt_store rule")
            return np.stack([array(row, "mask") for row in read_prompts(path)[0]])
    else:
        consensus = _consensus(args, store, ids)

        def references(n: int) -> np.ndarray:
            return consensus[n]

    annotations = annotate_all(levels, count, references, args.mode, graded, args.noise, args.noise_seed)
    rows, grades, reasons = [], [], {}
    for sample, row in zip(ids, annotations):
        for t, annotation in enumerate(row):
            rows.append(
                {
                    "sample_id": sample,
                    "class_index": t,
                    "order": annotation.order.tolist(),
                    "grades": None if annotation.grades is None else annotation.grades.tolist(),
                    "ties": annotation.ties.tolist(),
                    "has_preference": annotation.has_preference,
                    "reason": annotation.reason,
                }
            )
            if annotation.reason:
                reasons[annotation.reason] = reasons.get(annotation.reason, 0) + 1
            elif annotation.grades is not None:
                grades += annotation.grades.tolist()
    with_preference = sum(row["has_preference"] for row in rows)
    settings = {"mode": args.mode, "reference": args.reference, "classes": args.classes, "noise": args.noise, "noise_seed": args.noise_seed}
    write_annotations(Path(args.out), rows, {**settings, "pairs": len(rows), "with_preference": with_preference, "why_no_preference": reasons})
    histogram = "" if not grades else ", grades 1-4 of the graded candidates with a preference: " + " / ".join(str(grades.count(g)) for g in (1, 2, 3, 4))
    why = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items()))
    print(f"annotations ({args.reference}, {args.mode}, classes {args.classes}, noise {args.noise}): {len(rows)} pairs, {with_preference} with a preference, "
          f"{len(rows) - with_preference} without ({why or 'none'}){histogram}", file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    import torch

    from samdpo.align.annotator import read_annotations
    from samdpo.align.candidates import read_candidates
    from samdpo.align.stage2 import LabelledSet, Stage2Settings, preference_pairs, train_stage2
    from samdpo.data.store import SampleStore
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.sam.image_embeddings import load_embeddings
    from samdpo.sam.specs import build_model
    from samdpo.data.splits import split_indices
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.model_folder import WEIGHTS
    from samdpo.train.model_folder import read_model_spec
    from samdpo.train.text_embeddings import read_text_embeddings

    torch.set_num_threads(max(1, args.threads))
    try:
        settings = Stage2Settings(**json_object(args.settings, "--settings"))
    except TypeError as exc:
        raise ConfigError(f"bad stage2 settings: {exc}") from exc
    anchored = settings.anchor_weight > 0 and settings.anchor_on == "labeled"
    if anchored and not args.splits:
        raise ConfigError("stage2.anchor_on labeled needs --splits (the labelled split's ground truth)")
    levels, meta = read_candidates(Path(args.candidates))
    spec = read_model_spec(args.model)
    if meta.get("model_settings_hash") is None or meta["model_settings_hash"] != spec.get("settings_hash"):
        raise ConfigError(f"{args.candidates}: candidates of another model than {args.model}; rerun the prediction and candidates rules")
    store = SampleStore(Path(args.store))
    index = _store_rows(store, meta, args)
    rows = [index[s] for s in meta["sample_ids"]]
    prompts = [load_image_prompts(Path(args.prompts), s, store.class_names) for s in meta["sample_ids"]]
    texts, _ = read_text_embeddings(Path(args.texts))
    pairs = preference_pairs(meta["sample_ids"], len(meta["class_names"]), read_annotations(Path(args.annotations)), settings.beta1, settings.beta2)
    policy = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    reference = build_model(spec["sam"], spec["text_dim"], spec["switches"], 0, load_weights=False)
    load_checkpoint(policy, Path(args.model) / WEIGHTS)
    load_checkpoint(reference, Path(args.reference or args.model) / WEIGHTS)  # another architecture: key mismatch error
    run = {key: spec[key] for key in ("sam", "text_dim", "clip", "point_count", "switches", "stage1", "splits", "data")}
    run |= {"stage1_settings_hash": spec["settings_hash"], "annotations": str(args.annotations)}
    labelled = None
    if anchored:
        chosen = split_indices(store, args.splits, ["labeled"])
        ids = [store.samples["sample_id"][i] for i in chosen]
        labelled = LabelledSet(
            store.images()[chosen], store.labels()[chosen], [load_image_prompts(Path(args.prompts), s, store.class_names) for s in ids],
            load_embeddings(args.embeddings, policy, ids), spec["stage1"]["gt_box_fraction"], spec["stage1"]["gt_box_jitter"],
        )
    train_stage2(
        policy, reference, store.images()[rows], levels, len(meta["thresholds"]), pairs, prompts, texts, settings, Path(args.out), run,
        spec["point_count"], progress=not args.no_progress, embeddings=load_embeddings(args.embeddings, policy, meta["sample_ids"]), labelled=labelled,
    )
    print(f"stage 2 ({asdict(settings)['objective']}) written to {args.out}", file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``align`` on the ``samdpo`` parser."""
    align = commands.add_parser("align", help="candidates, annotation and DPO alignment").add_subparsers(dest="action", required=True)
    candidates = align.add_parser("candidates", help="threshold the stage-1 probabilities of the unlabelled images")
    candidates.add_argument("--probs", required=True, help="folder with probs.npy + probs.json (stage-1 prediction)")
    candidates.add_argument("--out", required=True, help="folder for candidates.npy + candidates.json")
    candidates.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    candidates.set_defaults(func=_candidates)

    annotate = align.add_parser("annotate", help="grade or rank the candidates (virtual annotator or prompt agreement)")
    annotate.add_argument("--store", required=True)
    annotate.add_argument("--candidates", required=True)
    annotate.add_argument("--out", required=True, help="annotations Parquet file")
    annotate.add_argument("--mode", choices=["score", "rank"], default="score")
    annotate.add_argument("--reference", choices=["ground_truth", "prompt", "uncertainty"], default="ground_truth",
                          help="ground_truth: the paper's virtual annotator; prompt: IoU with the CRF mask; uncertainty: IoU with the "
                          "stage-1 model's consensus under box jitter (neither reads ground truth)")
    annotate.add_argument("--classes", choices=["present", "all"], default="all",
                          help="present: grade an organ only on images that show it (ground_truth only); all: every class")
    annotate.add_argument("--noise", type=float, default=0.0, help="share of grades flipped to a random other grade (robustness study)")
    annotate.add_argument("--noise-seed", type=int, default=0)
    annotate.add_argument("--prompts", help="prompts_cache/{dataset} (for --reference prompt or uncertainty)")
    annotate.add_argument("--model", help="stage-1 model folder (for --reference uncertainty)")
    annotate.add_argument("--texts", help="text embeddings Parquet (for --reference uncertainty)")
    annotate.add_argument("--embeddings", help="image embeddings folder (for --reference uncertainty; default: run the model's encoder)")
    annotate.add_argument("--uncertainty", help="align.uncertainty settings as a JSON object")
    annotate.add_argument("--no-progress", action="store_true")
    annotate.set_defaults(func=_annotate)

    train = align.add_parser("train", help="stage 2: DPO (or best-candidate) alignment of the stage-1 model")
    train.add_argument("--store", required=True)
    train.add_argument("--candidates", required=True)
    train.add_argument("--annotations", required=True)
    train.add_argument("--prompts", required=True)
    train.add_argument("--texts", required=True)
    train.add_argument("--model", required=True, help="stage-1 model folder (the policy's start and the reference)")
    train.add_argument("--reference", help="another folder for the reference (must match the policy's architecture)")
    train.add_argument("--out", required=True)
    train.add_argument("--settings", help="stage2 settings as a JSON object")
    train.add_argument("--embeddings", help="folder of the frozen encoder's image embeddings (embed-images); default: run the encoder")
    train.add_argument("--splits", help="split table: the labelled split's images and labels, for stage2.anchor_on labeled")
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    add_study_command(align)
