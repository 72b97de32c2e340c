"""The command line run in the test's own process: ``python -m core <args> --quiet --json`` without a new interpreter
importing torch (about 10 s each on 2 cores), through the CLI's own entry point and error handling."""

from __future__ import annotations

import contextlib
import io
import json


def cli_json(*args: str) -> dict:
    """The command's ``--json`` output; the test fails with the command's stderr when it exits non-zero."""
    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--quiet", "--json"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue().strip().splitlines()[-1])
