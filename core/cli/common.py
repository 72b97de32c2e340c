"""What every command shares: the JSON/human output, exit codes, argument types."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

log = logging.getLogger("core")


EXIT_BAD_INPUT = 2


EXIT_CANCELLED = 130


def _emit(args: argparse.Namespace, result: dict, human: str) -> None:
    """Print the human summary to stderr and, with --json, one JSON object to stdout."""
    print(human, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(_finite(result), default=str))


def _finite(value):
    """JSON has no NaN: report undefined metrics as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _probability(text: str) -> float:
    """A threshold on P(fake): a number in [0, 1], refused at the boundary otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a threshold on P(fake) lies in [0, 1], got {value:g}")
    return value


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1", "yes")


def add_command(sub, name: str, func, help: str) -> argparse.ArgumentParser:
    """A subcommand with the flags every command has (``--json``, ``--quiet``), dispatching to ``func``."""
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout as the last line")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=func)
    return p
