"""Grids of runs through a job engine (submitit; core.training.executors).

``--executor local`` is run for real: every job is a process of submitit's LocalExecutor. A job sent SIGUSR2 (what
Slurm sends before a time limit) checkpoints, requeues itself and resumes its run; a job killed mid-run is finished by
the same command run again (resumed from its last checkpoint, the other runs untouched). ``--executor slurm``
is checked through submitit's own sbatch text and its debug executor (the same jobs, run in this process); the test
against a real Slurm cluster is opt-in (``CORE_TEST_SLURM=1``, where ``sinfo`` answers: e.g. a single-node slurm-wlm
+ munge set up by hand, see docs/training.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.io import PAUSE_AT, PAUSE_FILE
from core.runs import Run
from core.training import engine, executors, protocols
from core.training.executors import ExecutorSettings, TrainJob, slurm_executor, slurm_minutes

REPO = Path(__file__).resolve().parents[1]
# 16 images in batches of 8: two steps an epoch, so step 3 is the first of epoch 2 (after epoch 1's checkpoint)
TINY = ["--method", "teacher", "--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32", "--batch-size", "8",
        "--num-workers", "0", "--max-train-samples", "16", "--max-eval-samples", "16"]
IN_EPOCH_TWO = "step@3"


def _launch(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", *argv, "--quiet", "--json"], cwd=REPO, text=True,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _paused_pid(process: subprocess.Popen, ready: Path, timeout: float = 600) -> int:
    """The pid of the job process that stopped at its pause point (core.io.pause_point writes it into ``ready``)."""
    deadline = time.monotonic() + timeout
    while not (ready.exists() and ready.read_text().strip()):
        assert process.poll() is None, f"the command ended before a job paused:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for a job to pause"
        time.sleep(0.05)
    return int(ready.read_text())


def _wait_gone(pid: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.05)


def _runs_by_seed(runs_dir: Path) -> dict[int, Path]:
    return {Run(p.parent).config()["seed"]: p.parent for p in runs_dir.glob("*/config.json")}


def test_a_local_grid_runs_each_seed_as_a_job_requeues_a_preempted_one_and_a_rerun_finishes_a_killed_one(
        tiny_benchmark, tmp_path, capsys):
    """Three seeds, one job (process) each, one at a time on a CPU; each stops in its epoch 2. Seed 0 goes on; seed 1
    is SIGKILLed; seed 2 gets SIGUSR2 (what Slurm sends before a time limit): submitit's handler calls
    TrainJob.checkpoint and requeues the job (the local executor restarts it), which resumes the run. The command then
    fails naming seed 1, and the same command again resumes seed 1 and leaves the two finished runs as they are."""
    from core.__main__ import main

    runs_dir, ready = tmp_path / "runs", tmp_path / "paused"
    grid = ["train", *TINY, "--epochs", "2", "--seeds", "0,1,2", "--executor", "local", "--runs-dir", str(runs_dir)]
    process = _launch(grid, {PAUSE_AT: IN_EPOCH_TWO, PAUSE_FILE: str(ready)})
    for sent in (None, signal.SIGKILL, signal.SIGUSR2):  # to the jobs of seeds 0, 1 and 2
        pid = _paused_pid(process, ready)
        if sent is not None:
            os.kill(pid, sent)
            _wait_gone(pid)
        ready.unlink()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 2, err
    assert "1 of 3 jobs did not finish: teacher seed 1" in err and "Run the same command again" in err
    runs = _runs_by_seed(runs_dir)
    assert {seed: Run(d).status()["status"] for seed, d in runs.items()} == {0: "finished", 1: "interrupted", 2: "finished"}
    assert "resumed after epoch 1" in (runs[2] / "log.txt").read_text(), "the requeued job resumed its run"
    job_logs = "".join(p.read_text() for p in (runs_dir / ".submitit").glob("*/*_log.*"))
    assert "Calling checkpoint method" in job_logs and "Requeued job" in job_logs
    untouched = {seed: (runs[seed] / "metrics.jsonl").read_bytes() for seed in (0, 2)}
    jobs_before = set((runs_dir / ".submitit").iterdir())

    assert main([*grid, "--quiet", "--json"]) == 0  # the same command again (in this process; its jobs are processes)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["runs"] == [str(runs[seed]) for seed in (0, 1, 2)]
    assert _runs_by_seed(runs_dir) == runs, "still exactly the three run directories"
    assert Run(runs[1]).status()["status"] == "finished"
    assert "resumed after epoch 1" in (runs[1] / "log.txt").read_text()
    for seed in (0, 2):  # reused, not retrained
        assert (runs[seed] / "metrics.jsonl").read_bytes() == untouched[seed]
    assert "resum" not in (runs[0] / "log.txt").read_text()
    assert len(set((runs_dir / ".submitit").iterdir()) - jobs_before) == 1, "one job: the finished runs start none"


def test_a_cancelled_job_leaves_no_result_on_slurm_and_its_checkpoint_resumes_the_same_run(tiny_benchmark, tmp_path,
                                                                                            monkeypatch):
    from core.config import build_config

    config = build_config(method="teacher", data="synthetic", arch="resnet-tiny", image_size=32, epochs=2, batch_size=8,
                          num_workers=0, max_train_samples=16, max_eval_samples=16, runs_dir=str(tmp_path / "runs"))
    steps = []

    def sigterm_in_epoch_two(name: str) -> None:  # what the engine's SIGTERM handler raises, at a known step
        steps.append(name)
        if steps.count("step") == 3:
            raise engine.Cancelled("received signal 15")

    monkeypatch.setattr(engine, "pause_point", sigterm_in_epoch_two)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    job = TrainJob(config)
    with pytest.raises(SystemExit, match="a requeued job resumes it"):  # no error result: a requeue runs it again
        job()
    (run_dir,) = _runs_by_seed(tmp_path / "runs").values()
    assert Run(run_dir).status()["status"] == "cancelled"

    monkeypatch.setattr(engine, "pause_point", lambda name: None)
    delayed = job.checkpoint()  # what submitit pickles and runs again when it requeues the job
    assert isinstance(delayed.function, TrainJob) and delayed.function.config == config
    (result,) = delayed.result()
    assert result.run_dir == run_dir and result.status == "finished"
    assert "resumed after epoch 1" in (run_dir / "log.txt").read_text()


def _parse(argv: list[str]):
    from core.cli import build_parser

    return build_parser().parse_args(argv)


def test_the_slurm_submission_carries_partition_gpus_cpus_and_time_limit(tmp_path, monkeypatch):
    """The sbatch script submitit would submit, written without Slurm on the machine: submitit's executor refuses to
    exist where ``srun`` is not on PATH, so its detection is answered here; nothing is submitted."""
    from submitit.slurm.slurm import SlurmExecutor

    from core.cli.train import executor_settings

    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # the same on a machine that has Slurm
    with pytest.raises(RuntimeError, match="srun"):
        slurm_executor(ExecutorSettings("slurm", tmp_path), cluster="slurm")
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))

    args = _parse(["train", *TINY, "--seeds", "0,1", "--executor", "slurm", "--slurm-partition", "gpu-long",
                   "--slurm-gpus", "2", "--slurm-time", "1:30:00", "--slurm-cpus", "6"])
    settings = executor_settings(args, tmp_path)
    assert settings == ExecutorSettings("slurm", tmp_path / ".submitit", "gpu-long", 2, 90, 6)
    sbatch = slurm_executor(settings, cluster="slurm")._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=gpu-long", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=6", "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=USR2@90",
                 f"#SBATCH --output={tmp_path}/.submitit/%j/%j_0_log.out", f"export PYTHONPATH={REPO}"):
        assert line in sbatch.splitlines() or line in sbatch, line
    assert "--gpus-per-node" not in slurm_executor(ExecutorSettings("slurm", tmp_path, slurm_gpus=0),
                                                   cluster="slurm")._executor._make_submission_file_text("x", "u")
    assert slurm_minutes("90") == 90 and slurm_minutes("0:00:30") == 1 and slurm_minutes("24:00:00") == 1440
    with pytest.raises(ValueError, match="minutes"):
        slurm_minutes("1h")


@pytest.mark.parametrize("argv, message", [
    (["train", *TINY, "--slurm-partition", "gpu"], "--slurm-partition: Slurm settings, for --executor slurm only"),
    (["train", *TINY, "--executor", "local", "--slurm-time", "60"], "--slurm-time: Slurm settings, for --executor slurm"),
    (["train", *TINY, "--executor", "slurm", "--slurm-time", "1.5h"], "--slurm-time takes minutes (90) or HH:MM:SS"),
    (["train", *TINY, "--executor", "local", "--resume", "runs/x"], "--resume continues one run in this process"),
    (["reproduce", "pearson-paper", "--dataset", "synthetic", "--dry-run", "--slurm-gpus", "2"],
     "--slurm-gpus: Slurm settings, for --executor slurm only"),
])
def test_executor_flags_are_checked_before_any_work(argv, message, capsys):
    from core.__main__ import main

    assert main([*argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_train_executor_slurm_runs_an_array_of_jobs_through_submitit(tiny_benchmark, tmp_path, monkeypatch, capsys):
    """The whole --executor slurm path, with submitit's debug executor in place of sbatch (jobs run in this process)."""
    from core.__main__ import main

    monkeypatch.setattr(executors, "SLURM_CLUSTER", "debug")
    runs_dir = tmp_path / "runs"
    assert main(["train", *TINY, "--epochs", "1", "--seeds", "0,1", "--executor", "slurm", "--slurm-partition", "gpu",
                 "--slurm-time", "10", "--runs-dir", str(runs_dir), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = _runs_by_seed(runs_dir)
    assert result["runs"] == [str(runs[0]), str(runs[1])] and result["status"] == "finished"
    assert all(Run(d).status()["status"] == "finished" for d in runs.values())
    assert (runs_dir / ".submitit").is_dir()


def test_reproduce_runs_its_stages_in_waves_of_what_they_need():
    """--executor: each wave's stages are jobs at once (the fine-tunes need their searches, the searches the teacher)."""
    plan = protocols.plan("pearson-paper", "synthetic", scale="full", seeds=[0, 1], methods=["kdfs", "pdd"])
    assert [[(s.stage, s.method, s.seed) for s in wave] for wave in protocols.waves(plan.stages)] == [
        [("teacher", "teacher", 0)],
        [("search", "kdfs", 0), ("search", "pdd", 0), ("search", "kdfs", 1), ("search", "pdd", 1)],
        [("finetune", "pdd", 0), ("finetune", "pdd", 1)]]
    taylor = protocols.plan("ntu-taylor", "synthetic:faceswap", scale="mini", seeds=[0])
    assert [[s.key for s in wave] for wave in protocols.waves(taylor.stages)] == [
        ["teacher", "dense"], ["search/taylor-iterative/0", "search/taylor-one-shot/0"]]


def test_reproduce_with_a_local_executor_runs_its_waves_as_jobs(tiny_benchmark, tmp_path):
    """A given teacher, then the KDFS search as a job (a process of the local executor); about 30 s on 2 CPU cores."""
    from core.config import build_config
    from core.training.engine import train

    teacher = train(build_config(method="teacher", data="synthetic", arch="resnet-tiny", image_size=32, epochs=1,
                                 batch_size=8, num_workers=0, max_train_samples=16, max_eval_samples=16,
                                 runs_dir=str(tmp_path / "teacher")), progress=False).run_dir
    small = {"image_size": 32, "batch_size": 8, "max_train_samples": 16, "max_eval_samples": 16, "num_workers": 0,
             "epochs": 1}
    runs_dir = tmp_path / "runs"
    plan = protocols.plan("pearson-paper", "synthetic", scale="full", seeds=[0], methods=["kdfs"], teacher=str(teacher),
                          runs_dir=runs_dir, extra={"train": small, "train:kdfs": {"arch": "resnet-tiny"}})
    result = protocols.run(plan, out=tmp_path / "report", progress=False,
                           executor=ExecutorSettings("local", runs_dir / ".submitit"))
    (search,) = [r for r in result["runs"] if r["stage"] == "search"]
    (run_dir,) = _runs_by_seed(runs_dir).values()
    assert search["run_dirs"] == [str(run_dir)] and Run(run_dir).status()["status"] == "finished"
    assert len(list((runs_dir / ".submitit").glob("*/*_result.pkl"))) == 1, "the search ran as a job"
    assert {row["method"] for row in result["rows"]} == {"teacher", "kdfs"}


def _slurm_answers() -> bool:
    try:
        return shutil.which("sbatch") is not None and subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_on_a_real_slurm_cluster_a_requeued_job_resumes_its_run(tiny_benchmark, tmp_path):
    """A real sbatch job: SIGUSR2 mid-run (``scancel --signal=USR2``, as before a time limit) checkpoints and requeues
    it through ``scontrol requeue``; the requeued job resumes the run. Opt-in (``CORE_TEST_SLURM=1``): it submits to the
    cluster's default partition, and the job must see this test's temporary folders (a single-node cluster, or a shared
    disk); Slurm starts a requeued job again after about 2 minutes."""
    if os.environ.get("CORE_TEST_SLURM") != "1" or not _slurm_answers():
        pytest.skip("a real Slurm cluster only with CORE_TEST_SLURM=1 where sinfo answers")
    runs_dir, ready = tmp_path / "runs", tmp_path / "paused"
    process = _launch(["train", *TINY, "--epochs", "2", "--executor", "slurm", "--slurm-gpus", "0", "--slurm-time", "10",
                       "--runs-dir", str(runs_dir)], {PAUSE_AT: IN_EPOCH_TWO, PAUSE_FILE: str(ready)})
    pid = _paused_pid(process, ready)
    (job_id,) = {p.name.split("_")[0] for p in (runs_dir / ".submitit").glob("*/*_submitted.pkl")}
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
    _wait_gone(pid)
    ready.unlink()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    (run_dir,) = _runs_by_seed(runs_dir).values()
    assert Run(run_dir).status()["status"] == "finished"
    assert "resumed after epoch 1" in (run_dir / "log.txt").read_text()
