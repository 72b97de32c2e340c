"""The listings the dashboard draws: damaged entries are reported, never fatal."""

from __future__ import annotations

import json

from core.catalog import checkpoint_rows, run_rows
from core.checkpoint import save_checkpoint
from core.models import build_model
from core.runs import Run


def test_checkpoint_rows(tmp_path):
    header = {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
              "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "dataset": "synthetic:gan",
              "params": 1000, "macs": 2_000_000, "metrics": {"test_accuracy": 0.9}}
    save_checkpoint(tmp_path / "a.safetensors", build_model("resnet-tiny"), header)
    (tmp_path / "b.safetensors").write_text("garbage")
    rows = {row["checkpoint"]: row for row in checkpoint_rows(tmp_path)}
    assert rows["a.safetensors"]["test_accuracy"] == 0.9 and rows["a.safetensors"]["macs_m"] == 2.0
    assert "error" in rows["b.safetensors"]


def test_run_rows_report_damage(tmp_path):
    good = Run.create(tmp_path, "teacher", "synthetic")
    good.write_config({"method": "teacher", "data": "synthetic"})
    good.set_status("finished")
    damaged = Run.create(tmp_path, "teacher", "synthetic:gan")
    (damaged.dir / "config.json").write_text("{not json")
    rows = {row["run"]: row for row in run_rows(tmp_path)}
    assert rows[good.dir.name]["status"] == "finished"
    assert rows[damaged.dir.name]["status"] == "damaged"


def test_status_of_a_dead_process_reads_interrupted(tmp_path):
    run = Run.create(tmp_path, "teacher", "synthetic")
    run.write_config({"method": "teacher"})
    (run.dir / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12345}))
    assert run.status()["status"] == "interrupted"
    (run.dir / "status.json").write_text("{torn")
    assert run.status()["status"] == "damaged" and "JSONDecodeError" in run.status()["error"]
    (run.dir / "status.json").unlink()
    assert run.status()["status"] == "unknown"
