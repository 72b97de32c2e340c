"""Helpers of the reliability suite: run the CLI (in-process or as a process), stop a process at an exact
point (``core.io.pause_point``), and compare two runs bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.checkpoint import TRAINER_STATE, load_trainer_state, read_header
from core.io import PAUSE_AT, PAUSE_FILE
from core.runs import Run

REPO = Path(__file__).resolve().parents[2]
TIMING_KEYS = {"time", "train_seconds", "images_per_s", "seconds", "updated", "pid"}
TINY_TEACHER = ["--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32", "--batch-size", "8",
                "--num-workers", "0", "--max-train-samples", "48", "--max-eval-samples", "24", "--log-every", "2"]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m core ...`` in this process: (exit code, stdout, stderr)."""
    from core.__main__ import main

    capsys.readouterr()
    code = main(argv if "--quiet" in argv else [*argv, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *expected: str) -> str:
    """Exit 2, and the last stderr line is ``error: ...`` naming one of ``expected``, with no traceback."""
    assert code == 2, err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: "), err
    assert any(text in line for text in expected), line
    return line


def launch(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    """``python -m core <argv> --quiet --json`` as its own process."""
    return subprocess.Popen([sys.executable, "-m", "core", *argv, "--quiet", "--json"], cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pause_env(point: str, ready: Path) -> dict:
    """Environment that makes a process stop at ``point`` (``name@n``) and announce it in ``ready``."""
    return {PAUSE_AT: point, PAUSE_FILE: str(ready)}


def wait_for_pause(process: subprocess.Popen, ready: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None:
            raise AssertionError(f"the process ended before its pause point:\n{process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the pause point"
        time.sleep(0.02)


def sigkill(process: subprocess.Popen, ready: Path | None = None) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stdout.close()
    process.stderr.close()
    if ready is not None:
        ready.unlink(missing_ok=True)


def only_run(runs_dir: Path) -> Path:
    (config,) = runs_dir.glob("*/config.json")
    return config.parent


def temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".*.tmp"))


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def _same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _header(path: Path) -> dict:
    header = read_header(path)
    header["config"] = {k: v for k, v in header["config"].items() if k != "runs_dir"}
    header["history"] = [without_timing(entry) for entry in header.get("history", [])]  # its epochs' timings differ
    return header


def assert_same_run(ours: Path, theirs: Path) -> None:
    """Bit-identical results: best/last weights (masks included) and headers, every step/epoch/test record
    (timings aside), the trainer state (weights, optimiser, scheduler, counters) and the final status."""
    for name in ("best.safetensors", "last.safetensors"):
        a, b = load_file(str(ours / name)), load_file(str(theirs / name))
        _same(a, b, name)
        _same(_header(ours / name), _header(theirs / name), f"{name} header")
    for kind in ("step", "epoch", "test"):
        mine = [without_timing(r) for r in Run(ours).metrics(kind)]
        reference = [without_timing(r) for r in Run(theirs).metrics(kind)]
        assert mine, kind
        _same(mine, reference, f"metrics {kind}")
    _same(load_trainer_state(ours / TRAINER_STATE), load_trainer_state(theirs / TRAINER_STATE), "trainer state")
    status_a, status_b = Run(ours).status(), Run(theirs).status()
    assert status_a["status"] == status_b["status"] == "finished"
    _same(without_timing(status_a["test"]), without_timing(status_b["test"]), "status test")


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])
