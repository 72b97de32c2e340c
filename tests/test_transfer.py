"""Cross-dataset transfer after fine-tuning (``python -m core transfer``, the Pearson paper's Table 8): the source's
normalisation, layer4 + fc retrained and nothing else, AdamW with the lr divided by 10 after 5 epochs, one run per lr
of a grid and the best validation accuracy kept; ``report``'s source x target table."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from cli_support import cli_json

from core.checkpoint import load_checkpoint, save_checkpoint

SOURCE = "synthetic:gan"
TARGET = "synthetic:warp"
# not any split's statistics: a run that recomputed them on the target would not end with these
SOURCE_NORMALIZATION = {"mean": [0.31, 0.42, 0.53], "std": [0.21, 0.26, 0.32]}
ACTIVE = [32, 48, 64, 100, 128, 200, 256, 300]  # resnet-tiny's 8 block convs, pruned
COMMON = ["--data", TARGET, "--batch-size", "16", "--max-train-samples", "16", "--num-workers", "0"]


def _source_header(model: dict, method: str) -> dict:
    return {"method": method, "model": model, "image_size": 32, "normalization": SOURCE_NORMALIZATION,
            "dataset": SOURCE, "config": {"data": SOURCE, "augment": "none", "seed": 0}}


@pytest.fixture(scope="module")
def sources(tiny_benchmark, tmp_path_factory) -> dict[str, Path]:
    """An untrained resnet-tiny teacher and a compact (physically pruned) student of it, "trained on" SOURCE."""
    from core.models import build_model
    from core.models.compact import CompactResNet

    folder = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    save_checkpoint(folder / "teacher.safetensors", build_model("resnet-tiny"),
                    _source_header({"type": "resnet", "arch": "resnet-tiny"}, "teacher"))
    save_checkpoint(folder / "student.safetensors", CompactResNet("resnet-tiny", ACTIVE),
                    _source_header({"type": "compact-resnet", "arch": "resnet-tiny", "active_filters": ACTIVE}, "pearson"))
    return {"teacher": folder / "teacher.safetensors", "student": folder / "student.safetensors"}


@pytest.fixture(scope="module")
def grid(sources, tmp_path_factory) -> dict:
    """The teacher transferred with a grid of two lrs over 6 epochs, every AdamW the engine makes recorded."""
    made: list[torch.optim.Optimizer] = []

    class RecordedAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    runs = tmp_path_factory.mktemp("grid-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim, "AdamW", RecordedAdamW)
        result = cli_json("transfer", str(sources["teacher"]), *COMMON, "--epochs", "6", "--lr-grid", "1e-3,3e-2",
                          "--runs-dir", str(runs))
    return {"result": result, "optimizers": made}


def _state(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def _outside_layer4_and_fc(name: str) -> bool:
    return not name.startswith(("layer4.", "fc."))


def test_a_compact_student_keeps_its_source_normalisation_and_changes_only_layer4_and_fc(sources, tmp_path):
    result = cli_json("transfer", str(sources["student"]), *COMMON, "--epochs", "1", "--lr", "1e-2",
                      "--bn-statistics", "source", "--runs-dir", str(tmp_path))
    state, header = load_checkpoint(result["checkpoint"])
    assert header["normalization"] == SOURCE_NORMALIZATION  # the source's, not the target's train split's
    assert {k: result["normalization"][k] for k in ("mean", "std")} == SOURCE_NORMALIZATION
    assert header["model"] == {"type": "compact-resnet", "arch": "resnet-tiny", "active_filters": ACTIVE}
    assert header["transfer"]["source_dataset"] == SOURCE and header["transfer"]["target"] == TARGET
    assert header["transfer"]["source_method"] == "pearson" and header["config"]["data"] == TARGET
    before = _state(sources["student"])
    assert state.keys() == before.keys()
    changed = {name for name in state if not torch.equal(state[name], before[name])}
    # bn_statistics source: below layer4 nothing changes, running statistics included
    assert not {name for name in changed if _outside_layer4_and_fc(name)}
    assert any(name.startswith("layer4.") and name.endswith("conv1.weight") for name in changed)
    assert {"fc.weight", "fc.bias"} <= changed


def test_the_teacher_retrains_layer4_and_fc_with_the_target_batch_norm_statistics_by_default(sources, grid):
    kept = grid["result"]["kept"]["checkpoint"]
    state, header = load_checkpoint(kept)
    before = _state(sources["teacher"])
    parameters = {name for name, _ in _network(header, state).named_parameters()}
    changed = {name for name in state if not torch.equal(state[name], before[name])}
    assert not {name for name in changed & parameters if _outside_layer4_and_fc(name)}  # frozen weights stay
    assert {"fc.weight", "fc.bias", "layer4.0.conv1.weight"} <= changed
    # the authors' code trains in train mode: the frozen BatchNorms' statistics move to the target's
    assert "bn1.running_mean" in changed and header["transfer"]["bn_statistics"] == "target"
    assert header["normalization"] == SOURCE_NORMALIZATION


def _network(header: dict, state: dict) -> torch.nn.Module:
    from core.models import build_from_spec

    network = build_from_spec(header["model"])
    network.load_state_dict(state)
    return network


def test_adamw_trains_only_layer4_and_fc_and_the_lr_is_divided_by_10_after_5_epochs(grid):
    result, optimizers = grid["result"], grid["optimizers"]
    assert len(optimizers) == 2  # one AdamW per lr of the grid, nothing else
    network = _network(*reversed(load_checkpoint(result["checkpoint"])))
    trainable = sum(p.numel() for name, p in network.named_parameters() if not _outside_layer4_and_fc(name))
    for optimizer, run in zip(optimizers, result["runs"], strict=True):
        assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == trainable
        assert optimizer.defaults["weight_decay"] == 1e-4
        steps = [json.loads(line) for line in (Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        lr_of_epoch = {record["epoch"]: record["lr"] for record in steps if record["type"] == "step"}
        assert sorted(lr_of_epoch) == list(range(6))
        for epoch, lr in lr_of_epoch.items():
            assert lr == pytest.approx(run["lr"] * (0.1 if epoch >= 5 else 1.0), rel=1e-12)
    settings = result["settings"]
    assert settings["optimizer"]["value"] == "adamw" and settings["optimizer"]["source"] == "published"
    assert settings["epochs"] == {"value": 6, "source": "given", "ref": "this command line"}
    assert settings["lr_grid"]["value"] == [1e-3, 3e-2] and settings["weight_decay"]["source"] == "author-code"


def test_the_run_of_best_validation_accuracy_is_kept_and_report_lays_it_out_source_by_target(grid, tmp_path):
    result = grid["result"]
    best = []
    for run in result["runs"]:  # the best validation accuracy of each run, from its own epoch records
        records = [json.loads(line) for line in (Path(run["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        best.append(max(record["val_accuracy"] for record in records if record["type"] == "epoch"))
    kept = best.index(max(best))  # the first on a tie
    assert [run["lr"] for run in result["runs"]] == [1e-3, 3e-2]
    assert [run["kept"] for run in result["runs"]] == [index == kept for index in range(2)]
    assert result["run_dir"] == result["runs"][kept]["run_dir"] and result["kept"]["val_accuracy"] == best[kept]

    report = cli_json("report", *(run["run_dir"] for run in result["runs"]), "--out", str(tmp_path / "report"),
                      "--no-latency", "--no-png")
    lines = Path(report["tables"]["transfer"]).read_text().splitlines()
    assert lines[0] == f"| source (trained on) | model | {TARGET} (measured) | {TARGET} (published) |"
    accuracy = result["runs"][kept]["test_accuracy"]
    assert lines[2] == f"| {SOURCE} | teacher | {100 * accuracy:.2f} (lr {result['runs'][kept]['lr']:g}) |  |"
    assert "none is invented" in (tmp_path / "report" / "report.md").read_text()


def test_kept_run_takes_the_best_validation_accuracy_and_the_first_on_a_tie():
    from core.methods.transfer import kept_run

    header = lambda accuracy: {"metrics": {"val_accuracy": accuracy}}  # noqa: E731
    assert kept_run([header(0.5), header(0.9), header(0.7)]) == 1
    assert kept_run([header(0.8), header(0.6), header(0.8)]) == 0
    assert kept_run([{"metrics": {}}, header(0.1)]) == 1


def _refusal(argv: list[str]) -> tuple[int, list[str]]:
    from core.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*argv, "--quiet"])
    return code, err.getvalue().strip().splitlines()


@pytest.mark.parametrize("flags, message", [
    (["--lr-grid", "1e-4,fast"], "'fast' is not a number"),
    (["--lr-grid", "1e-4,1e-4"], "given twice"),
    (["--lr", "1e-3", "--lr-grid", "1e-4"], "not both"),
    (["--preset", "quick"], "transfer has no preset"),
])
def test_bad_input_is_one_line(sources, flags, message, tmp_path):
    code, err = _refusal(["transfer", str(sources["teacher"]), *COMMON, "--runs-dir", str(tmp_path), *flags])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not list(tmp_path.iterdir())  # refused before any run directory


def test_a_missing_or_unfit_source_is_one_line(sources, tmp_path):
    from core.models import build_model

    code, err = _refusal(["transfer", str(tmp_path / "nope.safetensors"), *COMMON])
    assert code == 2 and len(err) == 1 and "no such checkpoint" in err[0]
    save_checkpoint(tmp_path / "meso.safetensors", build_model("mesonet"),
                    {**_source_header({"type": "resnet", "arch": "mesonet"}, "teacher"), "image_size": 32})
    code, err = _refusal(["transfer", str(tmp_path / "meso.safetensors"), *COMMON, "--runs-dir", str(tmp_path / "r")])
    assert code == 2 and len(err) == 1 and "without layer4 and fc" in err[0]
