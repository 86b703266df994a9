"""``samdpo data ...``: inspect and prepare datasets (thin entry points; the work: :mod:`samdpo.data.steps`)."""

from __future__ import annotations

import argparse
import sys

from samdpo.settings import json_object

KINDS = ["amos", "busi", "cxr"]


def _summary(args: argparse.Namespace) -> None:
    from samdpo.data.steps import summary_text

    text = summary_text(args.kind, args.root, json_object(args.settings, "--settings"), args.json, args.out)
    if text is not None:
        print(text)


def _prepare(args: argparse.Namespace) -> None:
    from samdpo.data.steps import prepare_store

    settings = json_object(args.settings, "--settings")
    print(
        prepare_store(args.kind, args.root, args.out, args.image_size, settings, not args.no_progress), file=sys.stderr
    )


def _split(args: argparse.Namespace) -> None:
    from samdpo.data.steps import split_store

    print(split_store(args.store, args.out, args.labeled, args.unlabeled, args.seed, args.validation), file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``data`` on the ``samdpo`` parser."""
    data = commands.add_parser("data", help="inspect and prepare datasets").add_subparsers(dest="action", required=True)
    summary = data.add_parser("summary", help="case, slice and foreground counts of a dataset folder")
    summary.add_argument("--kind", choices=KINDS, required=True)
    summary.add_argument("--root", required=True)
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--settings", help="reader settings as a JSON object")
    summary.add_argument("--out", help="write to this file (atomically) instead of standard output")
    summary.set_defaults(func=_summary)

    prepare = data.add_parser("prepare", help="read a dataset into the 2D sample store")
    prepare.add_argument("--kind", choices=KINDS, required=True)
    prepare.add_argument("--root", required=True)
    prepare.add_argument("--out", required=True, help="store folder")
    prepare.add_argument("--image-size", type=int, required=True, help="side of the stored images, pixels")
    prepare.add_argument("--settings", help="reader settings as a JSON object")
    prepare.add_argument("--no-progress", action="store_true")
    prepare.set_defaults(func=_prepare)

    split = data.add_parser("split", help="write the case-level labeled/unlabeled/validation/test table")
    split.add_argument("--store", required=True, help="prepared store folder")
    split.add_argument("--out", required=True, help="CSV with case_id,split")
    split.add_argument("--labeled", type=float, default=0.1)
    split.add_argument("--unlabeled", type=float, default=0.1)
    split.add_argument("--validation", type=float, default=0.1, help="selection set (at least 2 cases)")
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(func=_split)
