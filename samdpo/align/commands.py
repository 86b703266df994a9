"""``samdpo align ...``: candidates, annotation and stage-2 training (thin entry points)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from samdpo.errors import ConfigError, DataError
from samdpo.jsonarg import json_object


def _candidates(args: argparse.Namespace) -> None:
    from samdpo.align.candidates import candidate_levels, check_thresholds, write_candidates
    from samdpo.evaluation.metrics import read_predictions

    folder = Path(args.probs)
    probs, meta = read_predictions(folder)
    chosen = [i for i, split in enumerate(meta["sample_splits"]) if split == "unlabeled"]
    if not chosen:
        raise DataError(f"{folder}: no unlabelled image among the predicted ones")
    thresholds = check_thresholds(args.thresholds)
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


def _annotate(args: argparse.Namespace) -> None:
    from samdpo.align.annotator import annotate, write_annotations
    from samdpo.align.candidates import level_masks, read_candidates
    from samdpo.data.store import SampleStore

    levels, meta = read_candidates(Path(args.candidates))
    store = SampleStore(Path(args.store))
    index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
    if list(store.class_names) != meta["class_names"] or any(s not in index for s in meta["sample_ids"]):
        raise DataError(f"{args.candidates}: candidates of other samples or classes than {args.store}")
    count = len(meta["thresholds"])
    classes = len(meta["class_names"])
    if args.reference == "ground_truth":  # the virtual annotator: labels of the candidates' (unlabelled) images only
        labels = store.labels()

        def references(sample: str) -> list[np.ndarray]:
            label = np.asarray(labels[index[sample]])
            return [label == t + 1 for t in range(classes)]
    else:
        from samdpo.prompts.prompt_store import array, read_prompts

        def references(sample: str) -> list[np.ndarray]:
            path = Path(args.prompts) / f"{sample}.parquet"
            if not path.is_file():
                raise DataError(f"{path}: no prompt file for image {sample}; run the prompt_store rule")
            return [array(row, "mask") for row in read_prompts(path)[0]]

    rows, grades = [], []
    for n, sample in enumerate(meta["sample_ids"]):
        masks, reference = level_masks(np.asarray(levels[n]), count), references(sample)  # one read per image
        for t in range(classes):
            annotation = annotate(masks[t], reference[t], args.mode)
            rows.append(
                {
                    "sample_id": sample,
                    "class_index": t,
                    "order": annotation.order.tolist(),
                    "grades": None if annotation.grades is None else annotation.grades.tolist(),
                    "ties": annotation.ties.tolist(),
                    "has_preference": annotation.has_preference,
                }
            )
            if annotation.grades is not None:
                grades += annotation.grades.tolist()
    with_preference = sum(row["has_preference"] for row in rows)
    write_annotations(Path(args.out), rows, {"mode": args.mode, "reference": args.reference, "pairs": len(rows), "with_preference": with_preference})
    histogram = "" if not grades else ", grades 1-4: " + " / ".join(str(grades.count(g)) for g in (1, 2, 3, 4))
    print(f"annotations ({args.reference}, {args.mode}): {len(rows)} pairs, {with_preference} with a preference, "
          f"{len(rows) - with_preference} without (all candidates tied){histogram}", file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    import json

    import torch

    from samdpo.align.annotator import read_annotations
    from samdpo.align.candidates import read_candidates
    from samdpo.align.stage2 import Stage2Settings, preference_pairs, train_stage2
    from samdpo.data.store import SampleStore
    from samdpo.sam.checkpoints import load_checkpoint
    from samdpo.train.commands import build_model, load_embeddings
    from samdpo.train.prompt_data import load_image_prompts
    from samdpo.train.stage1 import SETTINGS, WEIGHTS
    from samdpo.train.text_embeddings import read_text_embeddings

    torch.set_num_threads(max(1, args.threads))
    try:
        settings = Stage2Settings(**json_object(args.settings, "--settings"))
    except TypeError as exc:
        raise ConfigError(f"bad stage2 settings: {exc}") from exc
    levels, meta = read_candidates(Path(args.candidates))
    spec = json.loads((Path(args.model) / SETTINGS).read_text())
    if meta["model_settings_hash"] != spec["settings_hash"]:
        raise ConfigError(f"{args.candidates}: candidates of another model than {args.model}; rerun the prediction and candidates rules")
    store = SampleStore(Path(args.store))
    index = {sample: i for i, sample in enumerate(store.samples["sample_id"])}
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
    train_stage2(
        policy, reference, store.images()[rows], levels, len(meta["thresholds"]), pairs, prompts, texts, settings, Path(args.out), run,
        spec["point_count"], progress=not args.no_progress, embeddings=load_embeddings(args.embeddings, policy, meta["sample_ids"]),
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
    annotate.add_argument("--reference", choices=["ground_truth", "prompt"], default="ground_truth",
                          help="ground_truth: the paper's virtual annotator; prompt: IoU with the CRF mask (no ground truth)")
    annotate.add_argument("--prompts", help="prompts_cache/{dataset} (for --reference prompt)")
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
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)
