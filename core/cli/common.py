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


def emit(args: argparse.Namespace, result: dict, human: str) -> None:
    """Print the human summary to stderr and, with --json, one JSON object to stdout."""
    print(human, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(finite(result), default=str))


def finite(value):
    """JSON has no NaN: report undefined metrics as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def probability(text: str) -> float:
    """A threshold on P(fake): a number in [0, 1], refused at the boundary otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a threshold on P(fake) lies in [0, 1], got {value:g}")
    return value


def boolean(text: str) -> bool:
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


def runtime_flag(parser: argparse.ArgumentParser) -> None:
    """``--runtime``: what serves the checkpoint (``core.load_model``'s runtime; default $CORE_RUNTIME, else auto)."""
    from core.deploy.runtimes import RUNTIME_CHOICES

    parser.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None,
                        help="auto (default, or $CORE_RUNTIME): the exact fp32 runtime measured fastest for this checkpoint "
                             "on this machine (measured once, cached beside it as <name>.serving.json); torch: PyTorch, "
                             "BatchNorm folded, channels_last; onnx / openvino: ONNX Runtime / OpenVINO fp32 on a cached "
                             "export; the other choices name one runtime each (int8: quantised, not exact)")


def answered_by(model, requested: str | None) -> dict:
    """The JSON keys saying which runtime answered: ``runtime``, ``round_to``, ``precision``, ``runtime_requested``,
    ``runtime_description``, and for auto its measurement (``runtime_selection``)."""
    from core.deploy.runtimes import default_runtime, describe

    result = {"runtime": model.runtime, "round_to": model.round_to, "precision": model.precision,
              "runtime_requested": requested or default_runtime(), "runtime_description": describe(model)}
    selection = getattr(model, "selection", None)
    if selection:
        result["runtime_selection"] = {
            "chosen": selection["chosen"], "reused": selection["reused"], "record": selection["path"],
            "threads": selection["threads"], "measured_at": selection["measured_at"],
            "candidates": [{k: c[k] for k in ("runtime", "round_to", "precision", "median_ms")} for c in selection["candidates"]],
            "unavailable": selection["unavailable"]}
    return result
