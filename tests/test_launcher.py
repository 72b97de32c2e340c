"""core.launcher: a launch is its own process, visible before its run directory exists, refused twice on a
CPU-only machine, and cancelled cleanly (the run says cancelled and can be resumed)."""

from __future__ import annotations

import time

import pytest
import torch

from core import launcher
from core.runs import list_runs


def _wait(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the one-run rule is for CPU-only machines")
def test_launch_refuse_cancel(tiny_benchmark, tmp_path):
    runs = tmp_path / "runs"
    pid = launcher.launch(["--method", "teacher", "--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32",
                           "--epochs", "50", "--batch-size", "4", "--num-workers", "0", "--log-every", "1"], runs)
    (activity,) = launcher.activities(runs)
    assert activity.pid == pid
    allowed, reason = launcher.can_launch(runs)
    assert not allowed and "CPU-only" in reason
    _wait(lambda: (a := launcher.activities(runs)) and a[0].run is not None and a[0].run.metrics("step"))
    state = launcher.progress(launcher.activities(runs)[0].run)
    assert state["status"] == "running" and 0 <= state["fraction"] < 1 and state["step"]["loss"] > 0
    launcher.cancel(launcher.activities(runs)[0])
    _wait(lambda: not launcher.activities(runs))
    (run,) = list_runs(runs)
    assert run.status()["status"] == "cancelled"
    assert launcher.can_launch(runs) == (True, "")
