"""SIGKILL of ``python -m core train`` at exact points, then ``--resume``: the result is bit-identical to an
unbroken run (CPU, same seed) for the teacher, KDFS and Pearson.

The process is stopped with the ``core.io.pause_point`` hook (``$CORE_TEST_PAUSE_AT``), so each kill lands
where it says: mid-epoch (after a training step of epoch 2, past the first checkpoint), mid-checkpoint-write
(epoch 2's trainer state written to its temporary but not renamed, after last/best already hold epoch 2)
and during validation (epoch 2 validated, nothing recorded). Identical means: best/last weights (masks
included) and headers, every step/epoch/test record but timings (so the temperature schedule and mask history
too), the trainer state (weights, optimiser, scheduler, counters) and the final status.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_support import (
    TINY_TEACHER,
    assert_same_run,
    cli,
    last_json,
    launch,
    only_run,
    pause_env,
    sigkill,
    temporaries,
    wait_for_pause,
)

import core
from core.runs import Run

# 48 images, batch 8: 6 steps per epoch, 2 epochs
KILL_POINTS = {
    "mid-epoch": "step@9",
    "mid-checkpoint-write": "write:trainer_state.pt@2",
    "during-validation": "validation@2",
}
METHODS = ["teacher", "kdfs", "pearson"]


def _arguments(method: str, teacher: Path, runs_dir: Path) -> list[str]:
    arguments = ["train", "--method", method, *TINY_TEACHER, "--epochs", "2", "--runs-dir", str(runs_dir)]
    if method != "teacher":
        arguments += ["--teacher", str(teacher), "--tau-start", "2", "--tau-end", "0.5", "--sampler-lr", "0.05"]
    return arguments


@pytest.fixture(scope="module")
def unbroken(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """One unbroken run per method, in this process (the reference)."""
    from core.__main__ import main

    runs = {}
    for method in METHODS:
        runs_dir = tmp_path_factory.mktemp(f"unbroken-{method}")
        assert main([*_arguments(method, tiny_teacher, runs_dir), "--quiet"]) == 0
        runs[method] = only_run(runs_dir)
    return runs


def _kill_at(point: str, arguments: list[str], tmp_path: Path) -> Path:
    ready = tmp_path / "paused"
    process = launch(arguments, pause_env(point, ready))
    wait_for_pause(process, ready)
    sigkill(process, ready)
    return only_run(Path(arguments[arguments.index("--runs-dir") + 1]))


@pytest.mark.parametrize("where", list(KILL_POINTS))
@pytest.mark.parametrize("method", METHODS)
def test_sigkill_then_resume_is_bit_identical(method, where, unbroken, tiny_teacher, tmp_path, capsys):
    run_dir = _kill_at(KILL_POINTS[where], _arguments(method, tiny_teacher, tmp_path / "runs"), tmp_path)
    run = Run(run_dir)
    assert run.status()["status"] == "interrupted"
    assert [r["epoch"] for r in run.metrics("epoch")] == ([0, 1] if where == "mid-checkpoint-write" else [0])
    if where == "mid-checkpoint-write":
        assert temporaries(run_dir) == [name for name in temporaries(run_dir) if name.startswith(".trainer_state.pt.")] != []
    core.load_model(run_dir / "last.safetensors")  # what is on disk is always a valid checkpoint

    code, out, err = cli(["train", "--resume", str(run_dir), "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["status"] == "finished"
    assert temporaries(run_dir) == [], "the killed process's temporaries are cleaned up"
    assert_same_run(run_dir, unbroken[method])


def test_sigkill_before_the_first_checkpoint_restarts_cleanly(unbroken, tiny_teacher, tmp_path, capsys):
    """Killed while writing the very first checkpoint: nothing to resume from but the config; still identical."""
    run_dir = _kill_at("write:last.safetensors@1", _arguments("teacher", tiny_teacher, tmp_path / "runs"), tmp_path)
    assert not (run_dir / "last.safetensors").exists() and temporaries(run_dir)
    code, _, err = cli(["train", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert_same_run(run_dir, unbroken["teacher"])
