"""Three launches at once into one runs directory (two ``python -m core train`` processes and one
``core.launcher.launch``, the dashboard's sidebar): three run directories, all finished, nothing clobbered.
(``Run.create`` under contention and the launcher's logs are also tested in test_security.py.)"""

from __future__ import annotations

import os
import time

import pytest
from reliability_support import (
    REPO,
    TINY_TEACHER,
    assert_one_line_error,
    last_json,
    launch,
    only_run,
    pause_env,
    sigkill,
    wait_for_pause,
)
from safetensors.torch import load_file

import core
from core import launcher
from core.runs import Run, list_runs


def test_three_simultaneous_launches_never_share_a_run_directory(tiny_benchmark, tmp_path):
    runs = tmp_path / "runs"
    arguments = ["--method", "teacher", *TINY_TEACHER, "--epochs", "1", "--max-train-samples", "16", "--max-eval-samples", "12"]
    processes = [launch(["train", *arguments, "--seed", str(seed), "--runs-dir", str(runs)]) for seed in (1, 2)]
    launcher.launch({"method": "teacher", "data": "synthetic", "arch": "resnet-tiny", "image_size": 32, "batch_size": 8,
                     "num_workers": 0, "log_every": 2, "epochs": 1, "max_train_samples": 16, "max_eval_samples": 12,
                     "seed": 3}, runs)  # what the sidebar's Launch button does: the same run as the two above, seed 3
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    deadline = time.monotonic() + 600
    # the sidebar's process writes "finished" and then still has to exit: wait for both
    while (len(list_runs(runs)) < 3 or any(run.status()["status"] == "running" for run in list_runs(runs))
           or launcher.activities(runs)):
        assert time.monotonic() < deadline, "the sidebar's launch did not finish"
        time.sleep(0.5)

    found = list_runs(runs)
    assert len({run.dir for run in found}) == 3
    assert sorted(run.config()["seed"] for run in found) == [1, 2, 3], "each run holds its own config"
    for run in found:
        status = run.status()
        assert status["status"] == "finished", status
        assert len(run.metrics("epoch")) == 1 and len(run.metrics("test")) == 1
        assert {r["epoch"] for r in run.metrics("step")} == {0}
        header = core.load_model(run.dir).header
        assert header["config"]["seed"] == run.config()["seed"] and header["metrics"]["test_accuracy"] == status["test"]["accuracy"]
        assert list(run.dir.glob(".*.tmp")) == []
    weights = [load_file(str(Run(run.dir).best_checkpoint))["conv1.weight"] for run in found]
    assert not any(weights[0].equal(w) for w in weights[1:]), "three seeds, three different networks"
    assert not launcher.activities(runs)


def _files(run_dir) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_two_resumes_of_one_run_started_together_train_it_once(tiny_benchmark, tmp_path):
    """An interrupted run (killed in its second epoch) resumed by two ``train --resume`` started at the same moment:
    exactly one trains; the other is refused with one line naming the process that holds the run, and the history
    has each epoch once. Then two resumes of the finished run at once: both say so, and nothing changes."""
    runs = tmp_path / "runs"
    killed = tmp_path / "killed"
    first = launch(["train", "--method", "teacher", *TINY_TEACHER, "--epochs", "2", "--runs-dir", str(runs)],
                   pause_env("step@8", killed))  # 6 steps an epoch: the second step of epoch 1
    wait_for_pause(first, killed)
    sigkill(first, killed)
    run = Run(only_run(runs))
    assert run.status()["status"] == "interrupted" and [r["epoch"] for r in run.metrics("epoch")] == [0]

    # each resume stops at its first step, holding the run, until this test lets it go
    readies = [tmp_path / "resume-a", tmp_path / "resume-b"]
    resumes = [launch(["train", "--resume", str(run.dir)], pause_env("step@1", ready)) for ready in readies]
    deadline = time.monotonic() + 300
    while not (any(ready.exists() for ready in readies) and any(p.poll() is not None for p in resumes)):
        assert time.monotonic() < deadline, [p.poll() for p in resumes]
        time.sleep(0.05)
    (winner,) = [i for i, ready in enumerate(readies) if ready.exists()]
    loser = resumes[1 - winner]
    _, err = loser.communicate(timeout=60)
    holder = readies[winner].read_text().strip()
    assert_one_line_error(loser.returncode, err, f"is being trained by process {holder} on ")
    assert "only one process trains a run" in err
    readies[winner].unlink()  # the winner goes on
    out, err = resumes[winner].communicate(timeout=600)
    assert resumes[winner].returncode == 0, err[-3000:]
    assert last_json(out)["status"] == "finished" and not last_json(out)["already_finished"]

    assert [r["epoch"] for r in run.metrics("epoch")] == [0, 1], "each epoch once"
    steps = [(r["epoch"], r["step"]) for r in run.metrics("step")]
    assert len(steps) == len(set(steps)) and len(run.metrics("test")) == 1
    assert (run.dir / "log.txt").read_text().count("resumed after epoch 1") == 1
    assert run.status()["status"] == "finished" and int(run.status()["pid"]) == resumes[winner].pid

    before = _files(run.dir)
    again = [launch(["train", "--resume", str(run.dir)]) for _ in range(2)]
    for process in again:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        assert last_json(out)["already_finished"] is True and last_json(out)["status"] == "finished"
        assert "had already finished: nothing to resume" in err or "already finished" in err
    assert _files(run.dir) == before, "resuming a finished run changes nothing"


def test_a_run_has_one_claimant_and_a_killed_holders_claim_goes_with_it(tmp_path):
    import signal
    import subprocess
    import sys

    from core.runs import RunBusy

    run = Run.create(tmp_path, "teacher", "synthetic")
    run.claim()
    with pytest.raises(RunBusy, match=f"is being trained by process {os.getpid()} on "):
        Run(run.dir).claim()  # a second claim, even in the same process
    run.release()
    again = Run(run.dir)
    again.claim()  # free again
    again.release()

    other = Run.create(tmp_path, "teacher", "synthetic")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from core.runs import Run; "
                               "run = Run(Path(sys.argv[1])); run.claim(); print('held', flush=True); time.sleep(600)", str(other.dir)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunBusy, match=f"process {holder.pid} on "):
        Run(other.dir).claim()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    holder.stdout.close()
    claimant = Run(other.dir)
    claimant.claim()  # the kernel dropped the killed holder's lock
    claimant.release()
