"""``python -m core ood fit``: a checkpoint's out-of-distribution model written beside it, the checkpoint untouched."""

from __future__ import annotations

import contextlib
import hashlib
import io

import pytest
import torch
from cli_support import cli_json

from core.checkpoint import save_checkpoint
from core.cli import main
from core.evaluation import ood

DATA = "synthetic:gan"  # tiny_benchmark: 42 train, 6 val, 12 test images of this source


def _checkpoint(folder, config: dict) -> tuple:
    """An untrained resnet-tiny at 32 px with no out-of-distribution model of its own (seeded: the same bytes each time)."""
    from core.models import build_model

    torch.manual_seed(0)
    path = folder / "tiny.safetensors"
    header = {"model": {"type": "resnet", "arch": "resnet-tiny"}, "method": "teacher", "image_size": 32, "config": config,
              "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_checkpoint(path, build_model("resnet-tiny").eval(), header)
    return path, path.read_bytes()


def test_ood_fit_writes_a_sidecar_and_leaves_the_checkpoint_alone(tiny_benchmark, tmp_path):
    import core
    from core.data.datasets import resolve_dataset

    checkpoint, before = _checkpoint(tmp_path, {"data": DATA})
    mtime = checkpoint.stat().st_mtime_ns
    assert ood.load_ood(checkpoint) is None
    result = cli_json("ood", "fit", str(checkpoint))

    sidecar = tmp_path / "tiny.ood.safetensors"
    assert result["sidecar"] == str(sidecar) and result["checkpoint"] == str(checkpoint) and result["data"] == DATA
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.ood.safetensors", "tiny.safetensors"]
    assert checkpoint.read_bytes() == before and checkpoint.stat().st_mtime_ns == mtime, "the checkpoint is not rewritten"
    assert hashlib.sha256(checkpoint.read_bytes()).digest() == hashlib.sha256(before).digest()
    assert {"method", "stages", "dims", "quantile", "threshold", "stage_scales", "noise", "n_fit", "n_calibration",
            "test_in_distribution", "n_test", "sidecar_bytes"} <= set(result)
    assert (result["n_fit"], result["n_calibration"], result["n_test"]) == (42, 6, 12)  # train, val, test of the source
    assert result["sidecar_bytes"] == sidecar.stat().st_size and result["dims"] == ood.DIMS
    assert result["stages"] == ["layer1", "layer2", "layer3", "layer4"]  # every stage of the network

    # the sidecar loads back, from its own path and as the checkpoint's, with the statistics fitted on the training split
    loaded = ood.load_sidecar(sidecar)
    assert loaded.stages == result["stages"] and loaded.threshold == result["threshold"]
    assert [density.scale for density in loaded.densities] == result["stage_scales"]
    assert loaded.info["data"] == DATA and loaded.info["n_fit"] == 42
    assert ood.load_ood(checkpoint).threshold == loaded.threshold
    model = core.load_model(checkpoint)
    dataset = resolve_dataset(DATA)
    train = ood.collect(model, dataset.split("train"), model.preprocess, progress=False)
    for name, density in zip(loaded.stages, loaded.densities, strict=True):
        torch.testing.assert_close(density.mean, train[name].double().mean(dim=0).float(), rtol=1e-4, atol=1e-5)
    # calibrated on the validation split: its 95% quantile (between the 5th and the 6th of 6 scores) scores 1
    val_scores = loaded.score(ood.collect(model, dataset.split("val"), model.preprocess, progress=False)).sort().values
    assert val_scores[4] <= 1 + 1e-6 and val_scores[5] >= 1 - 1e-6
    test_scores = loaded.score(ood.collect(model, dataset.split("test"), model.preprocess, progress=False))
    assert result["test_in_distribution"] == pytest.approx(float((test_scores <= 1).float().mean()), abs=1e-4)


def _fails(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_ood_fit_bad_input_is_one_line_and_writes_nothing(tiny_benchmark, tmp_path):
    code, out, err = _fails(["ood", "fit", str(tmp_path / "missing.safetensors"), "--quiet", "--json"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "missing.safetensors" in err
    assert list(tmp_path.iterdir()) == []

    checkpoint, before = _checkpoint(tmp_path, {})  # a header that names no training data
    code, out, err = _fails(["ood", "fit", str(checkpoint), "--quiet", "--json"])
    assert code == 2 and out == "" and err.count("\n") == 1 and "give --data" in err
    assert list(tmp_path.iterdir()) == [checkpoint] and checkpoint.read_bytes() == before
