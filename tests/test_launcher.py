"""core.launcher: a launch is its own process, visible before its run directory exists; a launch that finds
no free slot waits in a queue of files served by a detached dispatcher (in order, one at a time on the CPU,
surviving a restart, cancellable before it starts); a running launch is cancelled cleanly (the run says
cancelled and can be resumed)."""

from __future__ import annotations

import json
import subprocess
import time
from types import SimpleNamespace

import pytest

from core import launcher
from core.runs import LAUNCHED_BY, Run, list_runs

TINY = {"method": "teacher", "data": "synthetic", "arch": "resnet-tiny", "image_size": 32, "num_workers": 0}
QUICK = {**TINY, "epochs": 1, "max_train_samples": 16, "max_eval_samples": 16, "batch_size": 8}  # a train request


def _wait(predicate, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture()
def runs(tmp_path):
    """A runs folder whose dispatcher and launched runs are gone when the test ends, however it ends."""
    runs = tmp_path / "runs"
    yield runs
    assert launcher.stop_dispatcher(runs)
    for activity in launcher.activities(runs):
        launcher.cancel(activity)
    _wait(lambda: not launcher.activities(runs), timeout=60)


def test_gpu_slots_come_from_the_free_set():
    assert launcher.assign_devices("one", 0, set()) == (), "no GPU: the CPU, when nothing trains"
    assert launcher.assign_devices("one", 0, {4242}) is None, "the CPU runs one at a time"
    assert launcher.assign_devices("one", 4, {0, 2}) == (1,)
    assert launcher.assign_devices("one", 4, {0, 1, 2}) == (3,)
    assert launcher.assign_devices("one", 4, {0, 1, 2, 3}) is None
    assert launcher.assign_devices("all", 4, {2}) is None, "DDP over all GPUs waits until none is busy"
    assert launcher.assign_devices("all", 4, set()) == (0, 1, 2, 3)
    assert launcher.train_command(["--method", "teacher"], "/r", 4)[1:6] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert launcher.train_command(["--method", "teacher"], "/r")[1:5] == ["-m", "core", "train", "--method"]
    with pytest.raises(ValueError, match="gpus must be one of"):
        launcher.launch(QUICK, "/nonexistent", gpus="some")


def test_on_gpus_a_launch_takes_a_free_gpu_or_all_of_them_under_torchrun(tmp_path, monkeypatch):
    """The GPU path without GPUs: two GPUs, processes stood in for by ``sleep`` (alive while they hold a GPU)."""
    runs = tmp_path / "runs"
    holders = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    started = []

    def start(command, **kwargs):
        started.append((command, kwargs["env"].get("CUDA_VISIBLE_DEVICES")))
        return SimpleNamespace(pid=holders[len(started) - 1].pid)

    monkeypatch.setattr(launcher, "gpu_count", lambda: 2)
    monkeypatch.setattr(launcher.subprocess, "Popen", start)
    monkeypatch.setattr(launcher, "_ensure_dispatcher", lambda runs_dir: None)  # no dispatcher process here
    try:
        assert launcher.launch(QUICK, runs).started and launcher.launch(QUICK, runs).started
        assert [gpus for _, gpus in started] == ["0", "1"]
        assert sorted(a.gpus for a in launcher.activities(runs)) == [(0,), (1,)]
        everything = launcher.launch(QUICK, runs, gpus="all")
        behind = launcher.launch(QUICK, runs)
        assert (everything.position, behind.position) == (1, 2), "in order: a single-GPU launch waits behind DDP"
        for holder in holders[:2]:
            holder.kill()
            holder.wait()
        assert [launch_id for launch_id, _ in launcher.dispatch(runs)] == [everything.id]
        command, gpus = started[-1]
        assert gpus == "0,1" and command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        assert [e.id for e in launcher.queued(runs)] == [behind.id] and launcher.dispatch(runs) == []
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_a_busy_slot_queues_and_a_queued_launch_cancels_before_it_starts(tiny_benchmark, runs):
    launched = launcher.launch({**TINY, "epochs": 50, "batch_size": 4, "log_every": 1}, runs)
    assert launched.started and launched.position is None
    (activity,) = launcher.activities(runs)
    assert activity.pid == launched.pid
    waiting = launcher.launch({**QUICK, "seed": 7}, runs)
    assert not waiting.started and waiting.position == 1, "a second launch on the CPU waits, it is not refused"
    _wait(lambda: launcher.dispatcher_pid(runs))  # started by the launch, detached: it would start the entry
    assert launcher.stop_dispatcher(runs), "the dispatcher stops on request (the queue stays)"
    (entry,) = launcher.queued(runs)  # read again from the files, as a restarted dashboard would
    assert (entry.id, entry.position, entry.arguments[-1]) == (waiting.id, 1, "7") and entry.path.is_file()
    stored = json.loads(entry.path.read_text())
    assert stored["request"] == {**QUICK, "seed": 7} and entry.request == stored["request"]
    assert stored["arguments"] == ["--method", "teacher", "--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32",
                                   "--num-workers", "0", "--epochs", "1", "--max-train-samples", "16",
                                   "--max-eval-samples", "16", "--batch-size", "8", "--seed", "7"]  # rendered from it
    assert entry.describe() == "teacher on synthetic"
    assert launcher.cancel_queued(runs, waiting.id) and not launcher.queued(runs)
    assert not launcher.cancel_queued(runs, waiting.id), "already gone"

    _wait(lambda: (a := launcher.activities(runs)) and a[0].run is not None and a[0].run.metrics("step"))
    state = launcher.progress(launcher.activities(runs)[0].run)
    assert state["status"] == "running" and 0 <= state["fraction"] < 1 and state["step"]["loss"] > 0
    assert state["losses"] and state["losses"][-1] == state["step"]["loss"]
    launcher.cancel(launcher.activities(runs)[0])
    _wait(lambda: not launcher.activities(runs))
    (run,) = list_runs(runs)
    assert run.status()["status"] == "cancelled" and run.config()["seed"] != 7, "the cancelled entry never ran"
    assert launcher.dispatch(runs) == [] and launcher.dispatcher_pid(runs) is None, "nothing waits: no dispatcher"


def test_three_quick_launches_run_one_after_another(tiny_benchmark, runs):
    first = launcher.launch({**QUICK, "seed": 1}, runs)
    second = launcher.launch({**QUICK, "seed": 2}, runs)
    cancelled = launcher.launch({**QUICK, "seed": 9}, runs)
    third = launcher.launch({**QUICK, "seed": 3}, runs)
    assert first.started and [w.position for w in (second, cancelled, third)] == [1, 2, 3]
    assert launcher.cancel_queued(runs, cancelled.id)
    assert [e.id for e in launcher.queued(runs)] == [second.id, third.id]
    # a restart: the dispatcher goes away with two launches waiting; the next look (the live panel's) resumes them
    _wait(lambda: launcher.dispatcher_pid(runs))
    assert launcher.stop_dispatcher(runs) and [e.position for e in launcher.queued(runs)] == [1, 2]
    launcher.dispatch(runs)
    _wait(lambda: not launcher.queued(runs) and not launcher.activities(runs) and launcher.dispatcher_pid(runs) is None,
          timeout=300)

    found = sorted(list_runs(runs), key=lambda run: (run.dir / "config.json").stat().st_mtime)
    assert [run.config()["seed"] for run in found] == [1, 2, 3], "in launch order; the cancelled one never ran"
    assert len({run.dir for run in found}) == 3
    for earlier, later in zip(found, found[1:], strict=False):
        status = earlier.status()
        assert status["status"] == "finished", status
        assert (later.dir / "config.json").stat().st_mtime > status["updated"], "one after another, never two at once"
    assert found[-1].status()["status"] == "finished"


def test_a_launch_keeps_its_user_and_a_user_gets_at_most_max_per_user(tmp_path, monkeypatch):
    """Who launched, and the per-user quota, on the CPU's one slot without training: processes stood in for by
    ``sleep``."""
    runs = tmp_path / "runs"
    real_popen, holders, environments = subprocess.Popen, [], []

    def start(command, **kwargs):
        holders.append(real_popen(["sleep", "60"]))
        environments.append(kwargs["env"])
        return SimpleNamespace(pid=holders[-1].pid)

    monkeypatch.setattr(launcher, "gpu_count", lambda: 0)
    monkeypatch.setattr(launcher.subprocess, "Popen", start)
    monkeypatch.setattr(launcher, "_ensure_dispatcher", lambda runs_dir: None)  # no dispatcher process here
    monkeypatch.setenv(LAUNCHED_BY, "whoever-started-the-dashboard")  # never passed on as a launch's user
    alice, bob = "alice@lab.org", "bob@lab.org"
    try:
        first = launcher.launch(QUICK, runs, user=alice, max_per_user=2)
        assert first.started and environments[-1][LAUNCHED_BY] == alice
        assert [a.user for a in launcher.activities(runs)] == [alice], "the launch marker says who, before any run dir"
        second = launcher.launch(QUICK, runs, user=alice, max_per_user=2)
        assert second.position == 1
        with pytest.raises(ValueError, match=r"^alice@lab.org already has 2 launches queued or running \(at most 2 a "
                                             r"user\): wait for one to end, or cancel one$"):
            launcher.launch(QUICK, runs, user=alice, max_per_user=2)
        assert [e.id for e in launcher.queued(runs)] == [second.id], "a refused launch leaves nothing queued"
        launcher.launch(QUICK, runs, user=bob, max_per_user=2)
        launcher.launch(QUICK, runs)
        assert [(e.user, json.loads(e.path.read_text())["env"].get(LAUNCHED_BY)) for e in launcher.queued(runs)] == [
            (alice, alice), (bob, bob), (None, None)]
        assert [launcher.queued_or_running_by(runs, who) for who in (alice, bob, "carol@lab.org")] == [2, 1, 0]
        assert launcher.cancel_queued(runs, second.id) and launcher.queued_or_running_by(runs, alice) == 1
        third = launcher.launch(QUICK, runs, user=alice, max_per_user=2)
        assert third.position == 3 and launcher.queued_or_running_by(runs, alice) == 2
        for ending in range(2):  # alice's run ends: bob's starts; bob's ends: the anonymous one starts
            holders[ending].kill()
            holders[ending].wait()
            launcher.dispatch(runs)
        assert [env.get(LAUNCHED_BY) for env in environments] == [alice, bob, None]
        assert launcher.queued_or_running_by(runs, alice) == 1 and launcher.queued_or_running_by(runs, bob) == 0
        with pytest.raises(ValueError, match="max_per_user must be a whole number >= 1 with a user"):
            launcher.launch(QUICK, runs, max_per_user=2)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_a_run_records_who_launched_it_and_counts_while_it_runs(tmp_path, monkeypatch):
    """A run started with ``$CORE_LAUNCHED_BY`` (by the launcher, or by hand) says so in env.json and its row, and
    counts for that user while its process lives (here: this test's own process)."""
    from core.catalog import run_rows

    runs = tmp_path / "runs"
    run = Run.create(runs, "teacher", "synthetic")
    run.write_config({"method": "teacher", "data": "synthetic"})
    monkeypatch.setenv(LAUNCHED_BY, "carol@lab.org")
    run.write_environment("cpu")
    run.set_status("running")
    assert run.environment()["launched_by"] == "carol@lab.org" and run.summary()["launched_by"] == "carol@lab.org"
    assert launcher.queued_or_running_by(runs, "carol@lab.org") == 1
    run.set_status("finished")
    assert launcher.queued_or_running_by(runs, "carol@lab.org") == 0
    (row,) = run_rows(runs)
    assert row["launched_by"] == "carol@lab.org"
    monkeypatch.delenv(LAUNCHED_BY)
    run.write_environment("cpu")
    assert run.summary()["launched_by"] is None, "a run started by hand without it: nobody"


def test_one_gpu_slot_policy_serves_the_launcher_and_the_local_job_engine(monkeypatch):
    """core.training.gpus is the one policy: the usable GPUs (this process's CUDA_VISIBLE_DEVICES entries, none when
    the runs are pinned to a device) and the next slot; the sidebar's queue and --executor local both use it."""
    import torch

    from core.training import executors, gpus

    assert launcher.assign_devices is executors.assign_devices is gpus.assign_devices
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CORE_DEVICE", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    assert gpus.visible_gpus() == ["3", "5", "6", "7"] and gpus.gpu_count() == 4
    assert gpus.visible_gpus("cuda:1") == [] and gpus.visible_gpus("cpu") == []
    monkeypatch.setenv("CORE_DEVICE", "cpu")
    assert gpus.visible_gpus() == [] and launcher.gpu_count() == 0
    monkeypatch.delenv("CORE_DEVICE")
    monkeypatch.setattr(executors, "busy_gpus", lambda: {"5"})  # another process computes on GPU 5
    assert executors.free_gpus() == ["3", "6", "7"]
