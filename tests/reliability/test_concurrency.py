"""Three launches at once into one runs directory (two ``python -m core train`` processes and one
``core.launcher.launch``, the dashboard's sidebar): three run directories, all finished, nothing clobbered.
(``Run.create`` under contention and the launcher's logs are also tested in test_security.py.)"""

from __future__ import annotations

import time

from reliability_support import TINY_TEACHER, launch
from safetensors.torch import load_file

import core
from core import launcher
from core.runs import Run, list_runs


def test_three_simultaneous_launches_never_share_a_run_directory(tiny_benchmark, tmp_path):
    runs = tmp_path / "runs"
    arguments = ["--method", "teacher", *TINY_TEACHER, "--epochs", "1", "--max-train-samples", "16", "--max-eval-samples", "12"]
    processes = [launch(["train", *arguments, "--seed", str(seed), "--runs-dir", str(runs)]) for seed in (1, 2)]
    launcher.launch([*arguments, "--seed", "3"], runs)  # what the sidebar's Launch button does
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
