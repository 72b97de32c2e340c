"""Checkpoint round trips and refusals: tensors + JSON header, nothing unpickled."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import core
from core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_trainer_state,
    read_header,
    resolve_checkpoint,
    save_checkpoint,
    save_trainer_state,
)
from core.models import build_model


def _header(arch="resnet-tiny"):
    return {"method": "teacher", "model": {"type": "resnet", "arch": arch}, "image_size": 32,
            "normalization": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}, "metrics": {"val_accuracy": 0.9}}


def test_round_trip_and_load_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet-tiny").eval()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, _header())
    loaded = core.load_model(path, serve=False)  # the trained form: bit-identical
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.header["metrics"]["val_accuracy"] == 0.9
    assert loaded.preprocess.transforms[1].size == [32, 32]
    assert read_header(path)["format_version"] == 1
    served = core.load_model(path)  # the default: as served, the same logits up to float rounding
    torch.testing.assert_close(served(x), model(x), rtol=1e-4, atol=1e-5)


def test_fp16_checkpoint_loads_into_fp32(tmp_path):
    model = build_model("resnet-tiny").eval()
    path = tmp_path / "half.safetensors"
    save_checkpoint(path, model, _header(), dtype=torch.float16)
    state, _ = load_checkpoint(path)
    assert state["conv1.weight"].dtype == torch.float16
    loaded = core.load_model(path)
    assert loaded.conv1.weight.dtype == torch.float32
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=2e-2, atol=2e-2)


def test_run_directory_resolves_to_best(tmp_path):
    model = build_model("resnet-tiny")
    save_checkpoint(tmp_path / "last.safetensors", model, _header())
    assert resolve_checkpoint(tmp_path).name == "last.safetensors"
    save_checkpoint(tmp_path / "best.safetensors", model, _header())
    assert resolve_checkpoint(tmp_path).name == "best.safetensors"
    with pytest.raises(CheckpointError, match="no best"):
        resolve_checkpoint(tmp_path / "empty") if (tmp_path / "empty").mkdir() is None else None


def test_refuses_bad_files(tmp_path):
    model = build_model("resnet-tiny")
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, model, _header())

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_checkpoint = tmp_path / "notes.safetensors"
    not_checkpoint.write_text("hello")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    future = tmp_path / "future.safetensors"
    save_file({"w": torch.zeros(2)}, str(future), metadata={"core": json.dumps({**_header(), "format_version": 99})})
    wrong_arch = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong_arch, model, _header(arch="resnet18"))

    for path, message in [(truncated, "truncated|not a safetensors"), (not_checkpoint, "not a safetensors"),
                          (foreign, "without this project's header"), (future, "format 99"),
                          (wrong_arch, "does not match"), (tmp_path / "missing.safetensors", "no such")]:
        with pytest.raises(CheckpointError, match=message):
            core.load_model(path)


def test_trainer_state_is_weights_only(tmp_path):
    path = tmp_path / "state.pt"
    save_trainer_state(path, {"epoch": 3, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}})
    assert load_trainer_state(path)["epoch"] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    torch.save({"payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="unreadable trainer state"):
        load_trainer_state(path)


def test_ship_checkpoint_halves_and_still_loads(tmp_path):
    from core.deploy.ship import ship_checkpoint

    model = build_model("resnet-tiny").eval()
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir / "best.safetensors", model, _header())
    shipped = ship_checkpoint(run_dir, tmp_path / "shipped.safetensors")
    assert shipped.stat().st_size < 0.6 * (run_dir / "best.safetensors").stat().st_size
    header = read_header(shipped)
    assert header["stored_dtype"] == "float16" and header["shipped_from"] == "run"
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(core.load_model(shipped)(x), model(x), rtol=2e-2, atol=2e-2)


def test_compact_cost_reads_every_kind_of_checkpoint_the_same_way():
    from core.checkpoint import compact_cost

    student = {"model": {"type": "masked-resnet"}, "params": 25e6, "macs": 5e9,
               "pruning": {"compact_params": 5e6, "compact_macs": 1e9, "teacher_params": 25e6, "teacher_macs": 4e9}}
    assert compact_cost(student) == {"pruned": True, "params": 5e6, "macs": 1e9, "full_params": 25e6, "full_macs": 4e9,
                                     "params_reduction": 0.8, "macs_reduction": 0.75}
    taylor = {"model": {"type": "pruned-net"}, "structured_pruning": {"compact_params": 2e6, "compact_macs": 3e8,
                                                                       "dense_params": 4e6, "dense_macs": 6e8}}
    assert compact_cost(taylor)["params_reduction"] == 0.5 and compact_cost(taylor)["full_macs"] == 6e8
    finetuned = {**student, "model": {"type": "compact-resnet"}, "params": 4e6, "macs": 8e8}  # its own count wins
    assert (compact_cost(finetuned)["params"], compact_cost(finetuned)["macs_reduction"]) == (4e6, 0.8)
    dense = {"model": {"type": "resnet"}, "params": 25e6, "macs": 4e9}
    assert compact_cost(dense) == {"pruned": False, "params": 25e6, "macs": 4e9, "full_params": None, "full_macs": None,
                                   "params_reduction": 0.0, "macs_reduction": 0.0}
