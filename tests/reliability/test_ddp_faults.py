"""DDP (two gloo processes on CPU): when one rank dies the job fails cleanly (no hang past ``$CORE_DIST_TIMEOUT``)
with a recorded status and a clear message, and ``--resume`` then finishes it; a rank that stops answering
without dying fails the others at the timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from reliability_support import REPO, TINY_TEACHER, assert_one_line_error, only_run, pause_env, wait_for_pause

from core.runs import Run

DIST_TIMEOUT_S = 20
ARGUMENTS = ["train", "--method", "teacher", *TINY_TEACHER, "--batch-size", "4", "--epochs", "2", "--device", "cpu",
             "--quiet", "--json"]  # 48 images: 6 steps per epoch and process


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CORE_DIST_TIMEOUT": str(DIST_TIMEOUT_S), **extra}


def _children(pid: int) -> dict[int, int]:
    """rank -> pid of the worker processes torchrun started."""
    ranks = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        values = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
        ranks[int(values["RANK"])] = int(child)
    return ranks


def _torchrun(runs_dir: Path, *extra: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core",
                             *(extra or [*ARGUMENTS, "--runs-dir", str(runs_dir)])], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_rank_fails_the_job_cleanly_and_it_resumes(tiny_benchmark, tmp_path):
    runs = tmp_path / "runs"
    ready = tmp_path / "paused"
    job = _torchrun(runs, env=_env(**pause_env("step@8", ready)))  # both ranks pause in epoch 2, after the first checkpoint
    wait_for_pause(job, ready)
    os.kill(_children(job.pid)[1], signal.SIGKILL)
    ready.unlink()
    killed = time.monotonic()
    _, err = job.communicate(timeout=DIST_TIMEOUT_S + 120)
    assert job.returncode != 0 and time.monotonic() - killed < DIST_TIMEOUT_S + 60, "the job ends, it does not hang"
    run = Run(only_run(runs))
    status = run.status()
    assert status["status"] in ("failed", "cancelled"), status  # torchrun may SIGTERM rank 0 before it notices
    if status["status"] == "failed":
        assert "another process of this 2-process job died or stopped answering" in status["error"]
        assert f"--resume {run.dir}" in status["error"]
    assert [r["epoch"] for r in run.metrics("epoch")] == [0]

    resumed = _torchrun(runs, "train", "--resume", str(run.dir), "--quiet", "--json", env=_env())
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert run.status()["status"] == "finished"
    epochs = run.metrics("epoch")
    assert [r["epoch"] for r in epochs] == [0, 1] and all(r["replicas_identical"] for r in epochs)
    assert "resumed after epoch 1" in (run.dir / "log.txt").read_text()


def test_a_rank_that_stops_answering_fails_the_others_at_the_timeout(tiny_benchmark, tmp_path):
    """No torchrun agent to clean up: rank 1 is frozen (SIGSTOP); rank 0 gives up after $CORE_DIST_TIMEOUT."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runs = tmp_path / "runs"
    ready = tmp_path / "paused"
    ranks = []
    for rank in (0, 1):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   **(pause_env("step@8", ready) if rank == 0 else {}))
        ranks.append(subprocess.Popen([sys.executable, "-m", "core", *ARGUMENTS, "--runs-dir", str(runs)], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        wait_for_pause(ranks[0], ready)
        ranks[1].send_signal(signal.SIGSTOP)
        ready.unlink()
        frozen = time.monotonic()
        _, err = ranks[0].communicate(timeout=DIST_TIMEOUT_S + 120)
        waited = time.monotonic() - frozen
        assert DIST_TIMEOUT_S * 0.5 < waited < DIST_TIMEOUT_S + 60, waited
        assert_one_line_error(ranks[0].returncode, err, "rank 0: another process of this 2-process job died or stopped answering")
        status = Run(only_run(runs)).status()
        assert status["status"] == "failed" and "PeerFailure" in status["error"]
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
            process.stdout.close()
            process.stderr.close()
