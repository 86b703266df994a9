"""``samdpo align study``: the alignment study's command (the work: :mod:`samdpo.align.study_wiring`)."""

from __future__ import annotations

import argparse
import sys

from samdpo.devices import set_threads
from samdpo.settings import json_object, parse_settings


def _study(args: argparse.Namespace) -> None:
    from samdpo.align.study_wiring import run_alignment_study
    from samdpo.align.uncertainty import UncertaintySettings

    set_threads(args.threads)
    study = json_object(args.study, "--study")
    uncertainty = json_object(args.uncertainty, "--uncertainty")
    uncertainty = parse_settings(UncertaintySettings, uncertainty, "align.uncertainty")
    split_settings = json_object(args.split_settings, "--split-settings")
    line = run_alignment_study(
        args.store,
        args.splits,
        split_settings,
        args.prompts,
        args.texts,
        args.embeddings,
        args.model,
        study,
        args.seeds,
        uncertainty,
        (args.threshold, args.tolerance_mm),
        args.provenance,
        args.out,
    )
    print(line, file=sys.stderr)


def add_study_command(align: argparse._SubParsersAction) -> None:
    """Register ``align study``."""
    study = align.add_parser(
        "study",
        help="stage 2 for a grid of settings, each against the stage-1 model on the validation split (chooses) and "
        "one fixed test set (reports)",
    )
    study.add_argument("--store", required=True)
    study.add_argument("--splits", required=True, help="the pipeline's split table (its labelled split is checked)")
    study.add_argument(
        "--split-settings",
        required=True,
        help="the splits section as a JSON object (labeled, unlabeled, validation, seed)",
    )
    study.add_argument("--prompts", required=True)
    study.add_argument("--texts", required=True)
    study.add_argument("--embeddings", required=True)
    study.add_argument("--model", required=True, help="stage-1 model folder with probs.npy of its unlabelled images")
    study.add_argument(
        "--study",
        required=True,
        help="JSON object: base (the default run's settings), factorial (setting -> values, "
        "every combination run) and variations (a list of objects, each run alone on the base)",
    )
    study.add_argument("--seeds", type=int, nargs="+", default=[0])
    study.add_argument("--uncertainty", help="align.uncertainty settings as a JSON object")
    study.add_argument("--threshold", type=float, default=0.5, help="evaluation probability threshold")
    study.add_argument("--tolerance-mm", type=float, default=2.0)
    study.add_argument("--provenance", default="", help="what data and models produced the study (its Markdown title)")
    study.add_argument("--out", required=True, help="results/{dataset}_alignment_study.csv (+ .md, + _choice.json)")
    study.add_argument("--threads", type=int, default=1)
    study.set_defaults(func=_study)
