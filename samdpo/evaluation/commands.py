"""``samdpo eval`` and ``samdpo table``: evaluate predictions on the test split, build results tables (thin entry
points)."""

from __future__ import annotations

import argparse
import sys


def _eval(args: argparse.Namespace) -> None:
    from samdpo.evaluation.evaluate import Scoring, evaluate_models

    scoring = Scoring(args.store, args.splits, args.threshold, args.tolerance_mm)
    evaluate_models(scoring, args.probs, args.out, args.method, threads=args.threads)


def _table(args: argparse.Namespace) -> None:
    from samdpo.evaluation.tables import table_from_summaries

    written = table_from_summaries(
        args.dataset, args.summaries, args.methods, args.provenance, args.out, args.models, args.volumes
    )
    print(f"{len(args.methods)} methods in {', '.join(map(str, written))}", file=sys.stderr)


def _volumes(args: argparse.Namespace) -> None:
    from samdpo.evaluation.volume_files import write_volume_files
    from samdpo.settings import json_object

    reader = json_object(args.reader, "--reader")
    write_volume_files(
        args.store,
        args.splits,
        args.probs,
        args.root,
        reader,
        args.out,
        args.threshold,
        args.tolerance_mm,
        not args.no_progress,
    )


def _dpo_effect(args: argparse.Namespace) -> None:
    from samdpo.evaluation import dpo_effect

    rows = dpo_effect.dpo_effect_rows(
        args.eval, args.reference, args.models, args.diagnostics, draws=args.draws, seed=args.seed
    )
    markdown = dpo_effect.dpo_effect_markdown(rows, args.reference, diagnostics=bool(args.diagnostics))
    dpo_effect.write_dpo_effect(args.out, rows, markdown)
    print(markdown, end="")


def _box_quality(args: argparse.Namespace) -> None:
    import pandas as pd

    from samdpo import atomic
    from samdpo.evaluation.box_report import box_quality_report

    report = box_quality_report(args.store, args.splits, args.crf, args.refined)
    if args.out:
        atomic.write_text(args.out, report.to_csv(index=False, float_format="%.4f"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``eval``, ``volumes``, ``box-quality``, ``table`` and ``dpo-effect`` on the ``samdpo`` parser."""
    evaluate = commands.add_parser("eval", help="Dice / NSD / HD95 of models' predictions on the test split")
    evaluate.add_argument("--store", required=True, help="prepared sample store folder")
    evaluate.add_argument("--splits", required=True, help="split table CSV (case_id,split)")
    evaluate.add_argument(
        "--probs", nargs="+", required=True, help="folders with probs.npy and probs.json, one per model"
    )
    evaluate.add_argument(
        "--out",
        nargs="+",
        required=True,
        help="per-image CSV to write, one per --probs folder; each summary goes to the same name with .json",
    )
    evaluate.add_argument(
        "--threshold", type=float, default=0.5, help="probability at or above which a pixel is predicted"
    )
    evaluate.add_argument(
        "--tolerance-mm",
        type=float,
        default=2.0,
        help="NSD tolerance in the spacing unit (mm for AMOS, original pixels otherwise)",
    )
    evaluate.add_argument(
        "--method",
        nargs="+",
        help="method name recorded in each summary, one per --probs folder (default: the model folder's name)",
    )
    evaluate.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    evaluate.set_defaults(func=_eval)

    volumes = commands.add_parser(
        "volumes",
        help="label volumes (NIfTI, the scans' own grids and affines) of a model's AMOS test predictions, with 3D "
        "Dice / NSD / HD95 read off the files",
    )
    volumes.add_argument("--store", required=True, help="prepared AMOS sample store folder")
    volumes.add_argument("--splits", required=True, help="split table CSV (case_id,split)")
    volumes.add_argument("--probs", required=True, help="folder with probs.npy and probs.json")
    volumes.add_argument("--root", required=True, help="the AMOS folder the store was prepared from")
    volumes.add_argument("--reader", help="the AMOS reader's settings as a JSON object (as the store was prepared)")
    volumes.add_argument("--out", required=True, help="folder to write: CASE.nii.gz, volumes.csv, summary.json")
    volumes.add_argument(
        "--threshold", type=float, default=0.5, help="probability at or above which a voxel is predicted"
    )
    volumes.add_argument("--tolerance-mm", type=float, default=2.0, help="NSD tolerance in mm")
    volumes.add_argument("--no-progress", action="store_true")
    volumes.set_defaults(func=_volumes)

    table = commands.add_parser("table", help="results table (CSV, Markdown, PNG) from `samdpo eval` summaries")
    table.add_argument("--dataset", required=True)
    table.add_argument("--summaries", nargs="+", required=True, help="summary JSON files written by `samdpo eval`")
    table.add_argument("--methods", nargs="+", required=True, help="one method name per summary, same order")
    table.add_argument(
        "--models",
        nargs="+",
        help="one model name per summary, same order: adds the seed paper's row and number for each model it reports",
    )
    table.add_argument(
        "--volumes",
        nargs="*",
        help="one `samdpo volumes` summary.json per summary, same order: 3D Dice / NSD / HD95 read off the label "
        "volumes",
    )
    table.add_argument(
        "--provenance", required=True, help="which data and models produced the rows (the data_models column)"
    )
    table.add_argument("--out", required=True, help="CSV to write; .md and .png are written next to it")
    table.set_defaults(func=_table)

    effect = commands.add_parser(
        "dpo-effect",
        help="each aligned model against the stage-1 model it started from: paired mDice difference, case-bootstrap "
        "95%% interval",
    )
    effect.add_argument("--eval", required=True, help="folder of per-image evaluations (results/eval/DATASET)")
    effect.add_argument(
        "--reference", required=True, help="the stage-1 model the aligned ones started from (e.g. prompt_10)"
    )
    effect.add_argument("--models", nargs="+", required=True, help="the aligned models")
    effect.add_argument("--out", required=True, help="CSV to write; the .md goes next to it")
    effect.add_argument("--draws", type=int, default=2000, help="bootstrap resamples of the test cases")
    effect.add_argument("--seed", type=int, default=0)
    effect.add_argument(
        "--diagnostics", nargs="+", help="each model's settings.json (its alignment diagnostics), in --models order"
    )
    effect.set_defaults(func=_dpo_effect)

    quality = commands.add_parser(
        "box-quality", help="median IoU of the CRF (and refined) boxes with ground-truth boxes (test split)"
    )
    quality.add_argument("--store", required=True)
    quality.add_argument("--splits", required=True)
    quality.add_argument("--crf", required=True, help="crf.parquet")
    quality.add_argument("--refined", help="refined.parquet (SAM-refined boxes), reported beside the CRF's")
    quality.add_argument("--out", help="also write the table as CSV")
    quality.set_defaults(func=_box_quality)
