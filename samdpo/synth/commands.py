"""``samdpo synth``: a synthetic dataset in the real on-disk layout (thin entry point)."""

from __future__ import annotations

import argparse
import sys


def _synth(args: argparse.Namespace) -> None:
    from samdpo.synth.folder import write_folder

    line = write_folder(
        args.kind, args.out, args.cases, args.seed, args.force, size=args.size, slices=args.slices, layout=args.layout
    )
    print(line, file=sys.stderr)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``synth`` on the ``samdpo`` parser."""
    synth = commands.add_parser("synth", help="write a synthetic dataset in the real on-disk layout")
    synth.add_argument("kind", choices=["amos", "busi", "cxr"])
    synth.add_argument("--out", required=True, help="output folder (created; replaced only with --force)")
    synth.add_argument("--cases", type=int, required=True, help="number of volumes / images")
    synth.add_argument("--seed", type=int, default=0)
    sizes = "(default: samdpo.synth.amos.AmosSynthSettings's)"
    synth.add_argument("--size", type=int, help=f"amos: in-plane voxels per side {sizes}")
    synth.add_argument("--slices", type=int, help=f"amos: axial slices per volume (+-10%%) {sizes}")
    synth.add_argument("--layout", choices=["montgomery", "paired"], default="montgomery", help="cxr folder layout")
    synth.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    synth.set_defaults(func=_synth)
