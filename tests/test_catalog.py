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


def test_a_sidecar_is_a_column_of_its_checkpoint_row_never_a_row(tmp_path):
    """``x.ood.safetensors`` (the out-of-distribution model predict uses) belongs to ``x.safetensors``: the listing
    says "ood calibration" on x's row; every checkpoint's kind and architecture come from its header's model spec."""
    import shutil

    import pytest

    from core.checkpoint import SHIPPED_DIR, CheckpointError, read_header

    header = {"method": "teacher", "model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32,
              "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "dataset": "synthetic:gan", "params": 1, "macs": 1}
    for name in ("calibrated", "plain"):
        save_checkpoint(tmp_path / f"{name}.safetensors", build_model("resnet-tiny"), header)
    shutil.copy(SHIPPED_DIR / "teacher-resnet50-synthetic-faceswap.ood.safetensors", tmp_path / "calibrated.ood.safetensors")
    rows = {row["checkpoint"]: row for row in checkpoint_rows(tmp_path)}
    assert set(rows) == {"calibrated.safetensors", "plain.safetensors"}
    assert rows["calibrated.safetensors"]["ood_calibration"] is True and rows["plain.safetensors"]["ood_calibration"] is False
    assert not any("error" in row for row in rows.values())
    with pytest.raises(CheckpointError, match="the out-of-distribution sidecar of calibrated.safetensors, not a checkpoint"):
        read_header(tmp_path / "calibrated.ood.safetensors")


def test_the_shipped_listing_has_one_right_row_per_checkpoint():
    """What a newcomer sees first on the Overview: no error rows, sidecars folded into their checkpoints' rows."""
    from core.checkpoint import SHIPPED_DIR

    rows = {row["checkpoint"]: row for row in checkpoint_rows()}
    assert not [row for row in rows.values() if "error" in row]
    assert sorted(rows) == sorted(p.name for p in SHIPPED_DIR.glob("*.safetensors") if ".ood." not in p.name)
    assert (rows["dense-efficientnet_lite0-synthetic-faceswap.safetensors"]["kind"],
            rows["dense-efficientnet_lite0-synthetic-faceswap.safetensors"]["arch"]) == ("dense", "efficientnet_lite0")
    assert rows["student-pearson-resnet50-synthetic-faceswap.safetensors"]["kind"] == "compact student"
    assert rows["teacher-dual_resnet18-synthetic-faceswap.safetensors"]["arch"] == "dual_resnet18"
    assert all(row["ood_calibration"] for row in rows.values()), "every shipped checkpoint ships its calibration"


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
