"""``samdpo align ...``: candidates, annotation and stage-2 training (thin entry points)."""

from __future__ import annotations

import argparse
import sys

from samdpo.align.annotator import REFERENCES
from samdpo.align.steps import AnnotatorSettings, ReferenceInputs
from samdpo.align.study_commands import add_study_command
from samdpo.devices import set_threads
from samdpo.settings import json_object, parse_settings

#: The annotator's defaults (the align section's).
ANNOTATOR = AnnotatorSettings()


def _candidates(args: argparse.Namespace) -> None:
    from samdpo.align.candidates import CandidateSettings
    from samdpo.align.steps import run_candidates

    set_threads(args.threads)
    settings = parse_settings(CandidateSettings, json_object(args.settings, "--settings"), "align.candidates")
    inputs = ReferenceInputs(args.prompts, args.model, args.texts, args.embeddings, store=args.store)
    print(run_candidates(args.probs, args.out, settings, inputs, not args.no_progress), file=sys.stderr)


def _annotate(args: argparse.Namespace) -> None:
    from samdpo.align.steps import run_annotate

    settings = AnnotatorSettings(args.mode, args.reference, args.classes, args.noise, args.noise_seed)
    uncertainty = json_object(args.uncertainty, "--uncertainty") if args.reference == "uncertainty" else {}
    inputs = ReferenceInputs(args.prompts, args.model, args.texts, args.embeddings, uncertainty, tuple(args.human))
    print(run_annotate(args.store, args.candidates, args.out, settings, inputs, not args.no_progress), file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    from samdpo.align.stage2_settings import Stage2Settings
    from samdpo.align.steps import run_stage2

    set_threads(args.threads)
    settings = parse_settings(Stage2Settings, json_object(args.settings, "--settings"), "align.stage2")
    line = run_stage2(
        args.store,
        args.candidates,
        args.annotations,
        args.prompts,
        args.texts,
        args.model,
        args.reference,
        args.out,
        settings,
        args.embeddings,
        args.splits,
        not args.no_progress,
    )
    print(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``align`` on the ``samdpo`` parser."""
    align = commands.add_parser("align", help="candidates, annotation and DPO alignment").add_subparsers(
        dest="action", required=True
    )
    candidates = align.add_parser(
        "candidates",
        help="K candidate masks per (image, class) of the unlabelled images (thresholds, perturb, dropout)",
    )
    candidates.add_argument("--probs", required=True, help="folder with probs.npy + probs.json (stage-1 prediction)")
    candidates.add_argument("--out", required=True, help="folder for candidates.npy + candidates.json")
    candidates.add_argument("--settings", help="align.candidates settings as a JSON object (default: the paper's)")
    candidates.add_argument("--model", help="the stage-1 model folder that made --probs (for perturb and dropout)")
    candidates.add_argument("--prompts", help="prompts_cache/{dataset} (for perturb and dropout)")
    candidates.add_argument("--texts", help="text embeddings Parquet (for perturb and dropout)")
    candidates.add_argument("--embeddings", help="image embeddings folder (default: run the model's encoder)")
    candidates.add_argument("--store", help="the sample store (the images, without --embeddings)")
    candidates.add_argument("--threads", type=int, default=1)
    candidates.add_argument("--no-progress", action="store_true")
    candidates.set_defaults(func=_candidates)

    annotate = align.add_parser("annotate", help="grade or rank the candidates (virtual annotator or prompt agreement)")
    annotate.add_argument("--store", required=True)
    annotate.add_argument("--candidates", required=True)
    annotate.add_argument("--out", required=True, help="annotations Parquet file")
    annotate.add_argument("--mode", choices=["score", "rank"], default=ANNOTATOR.mode)
    annotate.add_argument(
        "--reference",
        choices=list(REFERENCES),
        default=ANNOTATOR.reference,
        help="ground_truth: the paper's virtual annotator; prompt: IoU with the CRF mask; uncertainty: IoU with the "
        "stage-1 model's consensus under box jitter; human: people's decisions from `samdpo annotate serve`, merged "
        "(none of the last three reads ground truth)",
    )
    annotate.add_argument(
        "--classes",
        choices=["present", "all"],
        default=ANNOTATOR.classes,
        help="present: grade an organ only on images that show it (ground_truth only); all: every class",
    )
    annotate.add_argument(
        "--noise",
        type=float,
        default=ANNOTATOR.noise,
        help="share of grades flipped to a random other grade (robustness study)",
    )
    annotate.add_argument("--noise-seed", type=int, default=ANNOTATOR.noise_seed)
    annotate.add_argument("--prompts", help="prompts_cache/{dataset} (for --reference prompt or uncertainty)")
    annotate.add_argument("--model", help="stage-1 model folder (for --reference uncertainty)")
    annotate.add_argument("--texts", help="text embeddings Parquet (for --reference uncertainty)")
    annotate.add_argument(
        "--embeddings", help="image embeddings folder (for --reference uncertainty; default: run the model's encoder)"
    )
    annotate.add_argument("--uncertainty", help="align.uncertainty settings as a JSON object")
    annotate.add_argument(
        "--human", nargs="+", default=[], help="annotations_human_{name}.parquet files (for --reference human)"
    )
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
    train.add_argument(
        "--embeddings", help="folder of the frozen encoder's image embeddings (embed-images); default: run the encoder"
    )
    train.add_argument(
        "--splits", help="split table: the labelled split's images and labels, for stage2.anchor_on labeled"
    )
    train.add_argument("--threads", type=int, default=1)
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    add_study_command(align)
