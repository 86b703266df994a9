"""``samdpo overlays``: the report's figure of prompts, graded candidates and predictions (thin entry point)."""

from __future__ import annotations

import argparse
import sys


def _overlays(args: argparse.Namespace) -> None:
    from samdpo.report.steps import run_overlays

    line = run_overlays(
        args.prompts,
        args.candidates,
        args.annotations,
        args.before,
        args.after,
        args.threshold,
        args.examples,
        args.out,
    )
    print(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``overlays`` on the ``samdpo`` parser."""
    overlays = commands.add_parser(
        "overlays", help="report figure: prompts, graded candidates and predictions before/after alignment"
    )
    overlays.add_argument("--prompts", required=True, help="the dataset's prompt store folder (prompts_cache/DATASET)")
    overlays.add_argument("--candidates", required=True, help="folder with candidates.npy and candidates.json")
    overlays.add_argument(
        "--annotations", required=True, help="the annotator's table (annotations_score.parquet or _rank)"
    )
    overlays.add_argument("--before", required=True, help="stage-1 model folder with probs.npy (the candidates' model)")
    overlays.add_argument("--after", required=True, help="aligned model folder with probs.npy")
    overlays.add_argument(
        "--threshold", type=float, default=0.5, help="probability at or above which a pixel is predicted"
    )
    overlays.add_argument("--examples", type=int, default=4, help="(image, class) rows to draw")
    overlays.add_argument("--out", required=True, help="PNG to write")
    overlays.set_defaults(func=_overlays)
