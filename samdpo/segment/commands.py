"""``samdpo segment`` and ``samdpo recipe``: thin command-line entry points."""

from __future__ import annotations

import argparse
import os
import sys

from samdpo.devices import set_threads
from samdpo.settings import json_object


def _segment(args: argparse.Namespace) -> None:
    from samdpo.segment.run import run_segment

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # every model is loaded from local files
        os.environ.setdefault(name, "1")
    set_threads(args.threads)
    line = run_segment(args.model, args.image, args.out, args.cache, args.device, args.threads, not args.no_progress)
    print(line, file=sys.stderr)


def _recipe(args: argparse.Namespace) -> None:
    from samdpo.segment.recipe import write_recipe

    settings = json_object(args.settings, "--settings")
    files = (args.clip_folder, args.prior, args.presence)
    line = write_recipe(args.model, args.store, settings, args.clip, *files, args.out)
    print(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``segment`` and ``recipe`` on the ``samdpo`` parser."""
    segment = commands.add_parser(
        "segment", help="segment a new image or scan with a trained model folder (no store, no labels)"
    )
    segment.add_argument("--model", required=True, help="a stage-1 or aligned model folder with its recipe/")
    segment.add_argument("--image", required=True, help="a NIfTI scan (CT models) or a PNG/JPEG/BMP/TIFF (2D models)")
    segment.add_argument("--out", required=True, help="masks to write: .nii.gz on the scan's grid, or .png")
    segment.add_argument("--cache", help="answer cache folder (diskcache; default: the run's answer_cache)")
    segment.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    segment.add_argument("--threads", type=int, default=1, help="torch threads and CRF worker processes")
    segment.add_argument("--no-progress", action="store_true")
    segment.set_defaults(func=_segment)

    recipe = commands.add_parser("recipe", help="write a trained model's prompt recipe (what segment reads)")
    recipe.add_argument("--model", required=True, help="the trained model folder")
    recipe.add_argument("--store", required=True, help="the sample store it was trained on (its table only)")
    recipe.add_argument("--settings", required=True, help="the prompt and predict sections as one JSON object")
    recipe.add_argument("--clip", required=True, help="the CLIP id the run used")
    recipe.add_argument("--clip-folder", help="the pipeline-trained small CLIP's folder, copied into the recipe")
    recipe.add_argument("--prior", help="anatomy_prior.npz, copied")
    recipe.add_argument("--presence", help="presence_prior.json, copied")
    recipe.add_argument("--out", required=True, help="the recipe folder to write (MODEL/recipe)")
    recipe.set_defaults(func=_recipe)
