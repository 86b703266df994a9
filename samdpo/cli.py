"""The ``samdpo`` command line: thin entry points over library code.

Errors caused by input (files, settings) print one line naming the file or setting and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from samdpo.errors import ConfigError, SamdpoError
from samdpo.settings import json_object
from samdpo.align.commands import add_commands as add_align_commands
from samdpo.baselines.commands import add_commands as add_unet_commands
from samdpo.evaluation.commands import add_commands as add_evaluation_commands
from samdpo.prompts.commands import add_commands as add_prompt_commands
from samdpo.report.commands import add_commands as add_report_commands
from samdpo.sam.commands import add_commands as add_sam_commands
from samdpo.train.commands import add_commands as add_train_commands


def _synth(args: argparse.Namespace) -> None:
    from samdpo import atomic, synth

    if args.cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {args.cases}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"{out}: folder exists and is not empty; pass --force to replace it")
    with atomic.atomic_dir(out) as tmp:
        synth.write(args.kind, tmp, args.cases, args.seed, size=args.size, slices=args.slices, layout=args.layout)
    print(f"wrote {args.cases} synthetic {args.kind} cases to {out}", file=sys.stderr)


def _summary(args: argparse.Namespace) -> None:
    from samdpo.data import readers

    from samdpo import atomic

    summary = readers.summarize(args.kind, Path(args.root), json_object(args.settings, "--settings"))
    text = json.dumps(summary.to_dict(), indent=2) if args.json else summary.to_table()
    if args.out:
        atomic.write_text(args.out, text + "\n")
    else:
        print(text)


def _prepare(args: argparse.Namespace) -> None:
    from samdpo.data import readers
    from samdpo.data.store import write_store

    samples = readers.iter_samples(args.kind, Path(args.root), args.image_size, json_object(args.settings, "--settings"))
    count = write_store(samples, Path(args.out), args.kind, args.image_size, progress=not args.no_progress)
    print(f"prepared {count} {args.kind} samples of {args.image_size}x{args.image_size} in {args.out}", file=sys.stderr)


def _split(args: argparse.Namespace) -> None:
    from samdpo.data.splits import SPLITS, make_splits, write_splits
    from samdpo.data.store import SampleStore

    store = SampleStore(Path(args.store))
    assignment = make_splits(store.samples["case_id"], args.labeled, args.unlabeled, args.seed)
    write_splits(assignment, Path(args.out))
    counts = {s: sum(v == s for v in assignment.values()) for s in SPLITS}
    print(f"split {len(assignment)} {store.kind} cases: {counts}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``samdpo`` command."""
    parser = argparse.ArgumentParser(prog="samdpo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic dataset in the real on-disk layout")
    synth.add_argument("kind", choices=["amos", "busi", "cxr"])
    synth.add_argument("--out", required=True, help="output folder (created; replaced only with --force)")
    synth.add_argument("--cases", type=int, required=True, help="number of volumes / images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=128, help="amos: in-plane voxels per side")
    synth.add_argument("--slices", type=int, default=40, help="amos: axial slices per volume (+-10%%)")
    synth.add_argument("--layout", choices=["montgomery", "paired"], default="montgomery", help="cxr folder layout")
    synth.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    synth.set_defaults(func=_synth)

    data = commands.add_parser("data", help="inspect and prepare datasets").add_subparsers(dest="action", required=True)
    summary = data.add_parser("summary", help="case, slice and foreground counts of a dataset folder")
    summary.add_argument("--kind", choices=["amos", "busi", "cxr"], required=True)
    summary.add_argument("--root", required=True)
    summary.add_argument("--json", action="store_true", help="print one JSON object")
    summary.add_argument("--settings", help="reader settings as a JSON object")
    summary.add_argument("--out", help="write to this file (atomically) instead of standard output")
    summary.set_defaults(func=_summary)

    prepare = data.add_parser("prepare", help="read a dataset into the 2D sample store")
    prepare.add_argument("--kind", choices=["amos", "busi", "cxr"], required=True)
    prepare.add_argument("--root", required=True)
    prepare.add_argument("--out", required=True, help="store folder")
    prepare.add_argument("--image-size", type=int, required=True, help="side of the stored images, pixels")
    prepare.add_argument("--settings", help="reader settings as a JSON object")
    prepare.add_argument("--no-progress", action="store_true")
    prepare.set_defaults(func=_prepare)

    split = data.add_parser("split", help="write the case-level labeled/unlabeled/test table")
    split.add_argument("--store", required=True, help="prepared store folder")
    split.add_argument("--out", required=True, help="CSV with case_id,split")
    split.add_argument("--labeled", type=float, default=0.1)
    split.add_argument("--unlabeled", type=float, default=0.1)
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(func=_split)

    add_prompt_commands(commands)
    add_train_commands(commands)
    add_sam_commands(commands)
    add_align_commands(commands)

    add_unet_commands(commands)
    add_evaluation_commands(commands)
    add_report_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``samdpo`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SamdpoError as exc:
        print(f"samdpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was finished (e.g. every answer received) is kept
        print("samdpo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
