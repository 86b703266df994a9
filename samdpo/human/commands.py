"""``samdpo annotate ...``: a person grades the candidates in a browser; agreement with the virtual annotator."""

from __future__ import annotations

import argparse
import sys

from samdpo.align.annotator import MODES
from samdpo.human.server import CANDIDATES, DECISIONS, PROMPTS


def _serve(args: argparse.Namespace) -> None:
    from samdpo.human.server import serve

    fill = {"dataset": args.dataset}
    serve(
        args.candidates or CANDIDATES.format(**fill),
        args.prompts or PROMPTS.format(**fill),
        args.folder or DECISIONS.format(**fill),
        args.name,
        args.mode,
        args.host,
        args.port,
        args.token,
    )


def _agreement(args: argparse.Namespace) -> None:
    from samdpo.human.agreement_table import run_agreement

    print(run_agreement(args.store, args.candidates, args.human, args.out), file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``annotate`` on the ``samdpo`` parser."""
    annotate = commands.add_parser("annotate", help="real human feedback: grade or rank the candidates in a browser")
    actions = annotate.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="serve the grading page for one person (127.0.0.1 by default)")
    serve.add_argument("--dataset", required=True, help="the dataset of a finished run (fills the default folders)")
    serve.add_argument("--name", required=True, help="who grades: names annotations_human_{name}.parquet")
    serve.add_argument("--mode", choices=list(MODES), default="score", help="grades 1-4 per candidate, or an order")
    serve.add_argument("--candidates", help=f"candidates folder (default {CANDIDATES})")
    serve.add_argument("--prompts", help=f"prompt store folder: images and boxes (default {PROMPTS})")
    serve.add_argument("--folder", help=f"where the decision file is kept (default {DECISIONS})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; any other than loopback needs a token")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--token", help="the token other machines must give (default: drawn and printed off loopback)")
    serve.set_defaults(func=_serve)

    agreement = actions.add_parser(
        "agreement", help="how each person's grades relate to the virtual annotator's IoU bins (reads ground truth)"
    )
    agreement.add_argument("--store", required=True, help="prepared store (its labels give the IoU)")
    agreement.add_argument("--candidates", required=True)
    agreement.add_argument("--human", required=True, nargs="+", help="annotations_human_{name}.parquet files")
    agreement.add_argument("--out", required=True, help="CSV: one block of IoU-bin rows per annotator")
    agreement.set_defaults(func=_agreement)
