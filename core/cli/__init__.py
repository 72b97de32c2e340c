"""The command line: ``python -m core <command>`` (see docs/interfaces.md); one module per command group.

Human logs and progress bars go to stderr. With ``--json`` the last line of
stdout is exactly one JSON object. Bad input ends with a one-line ``error: ...``
on stderr and exit status 2.

The one place where imports stay inside functions on purpose: a command's library modules are imported when that
command runs (``cmd_*``), so ``python -m core --help`` and every other command do not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import sys

import core.deploy.onnx  # noqa: F401  (registers the ONNX runner: every command reads .onnx checkpoints)
from core.cli import data, deploy, evaluate, predict, reproduce, train, video
from core.cli.common import EXIT_BAD_INPUT, EXIT_CANCELLED, add_command

GROUPS = (data, train, reproduce, deploy, evaluate, predict, video)  # the order of `python -m core --help`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in GROUPS:
        group.add_parsers(commands, add_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.checkpoint import CheckpointError
    from core.data.datasets import DatasetError
    from core.data.images import ImageLoadError
    from core.data.video import VideoError
    from core.training.engine import Cancelled

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    # OSError: a missing file, a full disk, a read-only folder (core.io.WriteError), ... (--verbose shows the traceback)
    except (DatasetError, CheckpointError, ImageLoadError, VideoError, ValueError, OSError, RuntimeError) as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    return 0

