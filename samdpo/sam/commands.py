"""``samdpo sam convert``: the explicit one-time conversion of a pickled SAM checkpoint to safetensors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samdpo.errors import ConfigError


def _convert(args: argparse.Namespace) -> None:
    from samdpo.sam.checkpoints import TrustNeeded, convert_checkpoint

    try:
        count = convert_checkpoint(Path(args.src), Path(args.dst), trust_pickle=args.trust_pickle)
    except TrustNeeded as exc:
        raise ConfigError(exc.explain("--trust-pickle")) from None
    print(f"{count} tensors of {args.src} written to {args.dst}; set sam.checkpoint to it", file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``sam`` on the ``samdpo`` parser."""
    sam = commands.add_parser("sam", help="SAM checkpoints").add_subparsers(dest="action", required=True)
    convert = sam.add_parser("convert", help="keep only the weights of a pickled checkpoint, as safetensors")
    convert.add_argument("src", help="the .pth file (e.g. sam-med2d_b.pth saved with its optimizer)")
    convert.add_argument("dst", help="the .safetensors file to write")
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="required: unpickling runs code stored in the file; give it only for a file you trust",
    )
    convert.set_defaults(func=_convert)
