"""The ``samdpo`` command line: thin entry points over library code.

Errors caused by input (files, settings) print one line naming the file or setting and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from samdpo.align.commands import add_commands as add_align_commands
from samdpo.baselines.commands import add_commands as add_unet_commands
from samdpo.data.commands import add_commands as add_data_commands
from samdpo.errors import SamdpoError
from samdpo.evaluation.commands import add_commands as add_evaluation_commands
from samdpo.human.commands import add_commands as add_human_commands
from samdpo.prompts.commands import add_commands as add_prompt_commands
from samdpo.report.commands import add_commands as add_report_commands
from samdpo.sam.commands import add_commands as add_sam_commands
from samdpo.segment.commands import add_commands as add_segment_commands
from samdpo.synth.commands import add_commands as add_synth_commands
from samdpo.train.commands import add_commands as add_train_commands


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``samdpo`` command."""
    parser = argparse.ArgumentParser(prog="samdpo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_synth_commands(commands)
    add_data_commands(commands)
    add_prompt_commands(commands)
    add_train_commands(commands)
    add_sam_commands(commands)
    add_align_commands(commands)
    add_human_commands(commands)
    add_unet_commands(commands)
    add_evaluation_commands(commands)
    add_report_commands(commands)
    add_segment_commands(commands)
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
