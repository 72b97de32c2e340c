"""`reproduce`: the published protocols planned exactly, run once, resumed, and reported beside the paper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config import CONFIG_DIR, build_config, load_presets, published_finetune
from core.training import protocols

REPO = Path(__file__).resolve().parents[1]

# The Pearson paper, typed independently of configs/presets.yaml: (T, tau0, tauE, lambda1, lambda2, lambda3[, rate]),
# KDFS from its Table 3, Pearson from its Table 4; the students' (lr, epochs) and the fine-tunes' lr from Tables 3-4
KDFS = {"rvf10k": (3, 2, 0.2, 1, 1, 0.5, 0.8), "140k": (2, 1, 0.1, 0.5, 10, 100, 0.7), "190k": (2, 1, 0.1, 0.5, 1, 1, 0.8),
        "gravex200k": (2, 1, 0.1, 0.5, 10, 100, 0.7), "deepfake330k": (3, 3, 0.7, 0.1, 1, 5, 0.8)}
PEARSON = {"rvf10k": (3, 2, 0.2, 1, 1, 0.5), "140k": (1, 1, 0.05, 0.5, 1, 1), "190k": (2, 1, 0.1, 0.5, 1, 1),
           "gravex200k": (2, 1, 0.1, 0.5, 1, 1), "deepfake330k": (1.5, 2, 0.5, 0.5, 1, 1)}
STUDENT = {"rvf10k": (0.005, 400), "140k": (0.005, 80), "190k": (0.005, 26), "gravex200k": (0.01, 80),
           "deepfake330k": (0.005, 35)}
FINETUNE_LR = {"rvf10k": 8e-5, "gravex200k": 2e-5, "deepfake330k": 4e-5}  # 140k and 190k: no KDFS/Pearson fine-tune
PDD_EPOCHS = {"rvf10k": 50, "140k": 30, "190k": 30, "gravex200k": 30, "deepfake330k": 30}
OPTION_KEYS = ("kd_temperature", "tau_start", "tau_end", "lambda_kd", "lambda_rl", "lambda_prune")
# Where the paper's equations and its authors' released code (sara24h/KDFS-Pearson-Corr) disagree: each side's value,
# and the reference the plan must give for it
SIDES = {
    "paper": {"kd_scale": ("t2", "published", "Eq. 9"), "feature_stages": ("sum", "published", "Eq. 10"),
              "feature_decoders": (True, "published", "Eq. 10"),
              "correlation_normalization": ("paper", "published", "Eq. 5")},
    "code": {"kd_scale": ("none", "author-code", "utils/loss.py@183e2f4"),
             "feature_stages": ("mean", "author-code", "train.py@183e2f4"),
             "feature_decoders": (False, "author-code", "utils/loss.py@183e2f4"),
             "correlation_normalization": ("author-code", "author-code", "utils/loss.py@183e2f4")},
}


def _values(config: dict) -> dict:
    """A stage's sourced config (every value as {value, source, ref}) as plain values."""
    plain = {key: item["value"] for key, item in config.items() if isinstance(item, dict) and "value" in item}
    return {**plain, "method": config["method"],
            "method_options": {name: item["value"] for name, item in config["method_options"].items()}}


def _cli(*args: str, timeout: float = 120) -> dict:
    result = subprocess.run([sys.executable, "-m", "core", *args, "--quiet", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _dry_run(dataset: str, capsys, *flags: str) -> dict:
    """The CLI in-process (one subprocess test below covers `python -m core` itself)."""
    from core.__main__ import main

    assert main(["reproduce", "pearson-paper", "--dataset", dataset, *flags, "--dry-run", "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_dry_run_is_one_json_line_from_the_real_cli():
    plan = _cli("reproduce", "pearson-paper", "--dataset", "rvf10k", "--dry-run")
    assert plan["protocol"] == "pearson-paper" and plan["runs"][0]["stage"] == "teacher"
    assert len(plan["runs"]) == 1 + 10 * 6, "the teacher, then 10 seeds (the paper's t-tests) of 3 searches + 3 fine-tunes"


@pytest.mark.parametrize("dataset", list(KDFS))
def test_dry_run_resolves_every_published_value(dataset, capsys):
    plan = _dry_run(dataset, capsys)
    assert (plan["protocol"], plan["dataset"], plan["reference"]) == ("pearson-paper", dataset, dataset)
    runs = plan["runs"]
    assert [r["stage"] for r in runs][0] == "teacher" and {r["seed"] for r in runs} == set(range(10))
    teacher = _values(runs[0]["config"])
    assert (teacher["pretrained"], teacher["trainable"], teacher["lr"], teacher["epochs"], teacher["image_size"]) == \
        ("imagenet", "layer4", 0.0001, 10, 256)
    sources = runs[0]["config"]
    assert sources["weight_decay"]["source"] == "published" and sources["epochs"]["source"] == "ours", \
        "the paper gives the teacher's weight decay, not its epochs"
    for run in runs[1:]:
        config = _values(run["config"])
        options = config["method_options"]
        assert run["command"][:3] == ["python", "-m", "core"] and config["image_size"] == 256 and config["data"] == dataset
        if run["stage"] == "search" and run["method"] in ("kdfs", "pearson"):
            expected = (KDFS if run["method"] == "kdfs" else PEARSON)[dataset]
            got = tuple(options[k] for k in OPTION_KEYS) + ((options["target_rate"],) if run["method"] == "kdfs" else ())
            assert got == pytest.approx(expected)
            assert (config["lr"], config["epochs"], config["batch_size"], config["optimizer"], config["arch"]) == \
                (*STUDENT[dataset], 128, "adam", "resnet50")
            assert config["teacher"] == "<teacher checkpoint>"
        if run["stage"] == "search" and run["method"] == "pearson":
            assert options["correlation_normalization"] == "author-code"
        if run["stage"] == "search" and run["method"] == "pdd":
            assert (config["arch"], config["optimizer"], config["lr"], config["momentum"], config["epochs"]) == \
                ("resnet18", "sgd", 0.01, 0.9, PDD_EPOCHS[dataset])
            assert (options["initial_score"], options["initial_score_std"], options["sampler_weight_decay"]) == (0, 0.001, None)
        if run["stage"] == "finetune":
            assert config["init_checkpoint"] == f"<search/{run['method']}/{run['seed']} checkpoint>"
            assert config["method_options"]["lambda_kd"] == 0  # the authors' fine-tune is BCE only
            if run["method"] == "pdd":
                assert (config["optimizer"], config["lr"], config["momentum"]) == ("sgd", 0.01, 0.9)
            else:
                assert (config["optimizer"], config["lr"]) == ("adam", FINETUNE_LR[dataset])
    finetuned = {(r["method"], r["seed"]) for r in runs if r["stage"] == "finetune"}
    searched = {(r["method"], r["seed"]) for r in runs if r["stage"] == "search"}
    expected = {(m, s) for m, s in searched if m == "pdd" or dataset in FINETUNE_LR}
    assert finetuned == expected, "fine-tune stages exactly where the paper fine-tuned"


@pytest.mark.parametrize("follow", list(SIDES))
def test_every_value_says_its_source_and_each_side_takes_its_own(follow, capsys):
    """140k, both --follow sides, against the hand-typed table above: every printed value has a source among the three
    and a reference; the published ones name their table or equation, the authors' code its file and commit; where
    the two disagree, each side takes its own; a value that does nothing for a method is not printed."""
    plan = _dry_run("140k", capsys, "--follow", follow, "--seeds", "0")
    assert any(f"--follow {follow}" in note for note in plan["notes"])
    for run in plan["runs"]:
        config = run["config"]
        items = [(key, item) for key, item in config.items() if isinstance(item, dict) and "value" in item]
        items += [(f"method_options.{name}", item) for name, item in config["method_options"].items()]
        for key, item in items:
            assert item["source"] in ("published", "author-code", "ours") and item["ref"], (run["method"], key, item)
            if item["source"] == "author-code":
                assert item["ref"].startswith(("sara24h/KDFS-Pearson-Corr ", "YihangZhou0424/PDD-Pruning-during-distillation")), item
        if run["stage"] != "search" or run["method"] == "pdd":
            assert "target_rate" not in config["method_options"] and (
                run["method"] == "teacher" or "tau_start" not in config["method_options"]), "PDD has no Gumbel or rate"
            continue
        options = config["method_options"]
        table = {"kdfs": "Table 3", "pearson": "Table 4"}[run["method"]]
        for name in OPTION_KEYS:
            assert options[name]["source"] == "published" and options[name]["ref"].startswith(table), (name, options[name])
        assert ("target_rate" in options) == (run["method"] == "kdfs"), "the rate is KDFS's alone"
        for name, (value, source, ref) in SIDES[follow].items():
            if name == "correlation_normalization" and run["method"] != "pearson":
                assert name not in options
                continue
            assert (options[name]["value"], options[name]["source"]) == (value, source), (follow, name, options[name])
            assert ref in options[name]["ref"], (name, options[name]["ref"])
        assert "momentum" not in config and config["epochs"]["source"] == "published"


def test_follow_paper_builds_the_papers_equations(capsys):
    """--follow paper: Hinton's T^2 on KD, a decoder per stage summed over the stages, and Eq. 5's 1/(W-1)."""
    code = build_config(preset="140k", method="pearson")
    paper = build_config(preset="140k", method="pearson", follow="paper")
    assert (code.follow, paper.follow) == ("code", "paper")
    assert {k: paper.method_options[k] for k in SIDES["paper"]} == {k: v[0] for k, v in SIDES["paper"].items()}
    assert {k: code.method_options[k] for k in SIDES["code"]} == {k: v[0] for k, v in SIDES["code"].items()}
    assert (code.optimizer, paper.optimizer) == ("adam", "adam"), "the text's Adam on both sides (not the code's Adamax)"
    assert code.method_options["kd_temperature"] == paper.method_options["kd_temperature"] == 1, "agreed values stay"
    with pytest.raises(ValueError, match="follow must be one of code, paper"):
        build_config(preset="140k", method="pearson", follow="both")


def test_mini_plan_shrinks_the_epochs_by_its_rule_and_uses_the_shipped_teacher():
    plan = protocols.plan("pearson-paper", "synthetic:faceswap", scale="mini")
    assert plan.reference == "140k" and [s.seed for s in plan.stages if s.stage == "search"] == [0, 0, 0]
    teacher = plan.stages[0]
    assert teacher.command is None and teacher.given.endswith("teacher-resnet50-synthetic-faceswap.safetensors")
    for stage in plan.stages[1:]:
        full = build_config(preset="140k", method=stage.method if stage.stage == "search" else "finetune",
                            student_method=stage.method).epochs
        assert stage.config["epochs"] == protocols.mini_epochs(full) and stage.config["image_size"] == 64
        assert stage.config["lr"] == (0.01 if stage.method == "pdd" else 0.005)  # the published lrs, unchanged
    assert protocols.mini_epochs(80) == 4 and protocols.mini_epochs(30) == 2 and protocols.mini_epochs(400) == 8
    assert [s.stage for s in plan.stages] == ["teacher", "search", "search", "search", "finetune"]


def test_the_other_protocols_plan_their_stages():
    lottery = protocols.plan("lottery-tickets", "synthetic:faceswap", scale="full", seeds=[0])
    assert [(s.method, s.label) for s in lottery.stages] == [("lth", "mesonet"), ("lth", "cnn5"), ("lth", "resnet18")]
    assert all("--one-shot" in s.command and s.config["method_options"]["prune_rate"] == 0.2 for s in lottery.stages)
    taylor = protocols.plan("ntu-taylor", "synthetic:faceswap", scale="mini")
    search = [s for s in taylor.stages if s.stage == "search"]
    assert [s.label for s in search] == ["iterative", "one-shot"]
    config = search[0].config
    assert (config["optimizer"], config["lr"], config["weight_decay"], config["scheduler"], config["early_stopping_patience"]) \
        == ("adam", 0.0002, 1e-5, "none", 3)
    assert (config["method_options"]["alpha"], config["method_options"]["kd_temperature"]) == (0.25, 1)
    two = protocols.plan("two-in-one", "synthetic:faceswap", scale="mini")
    assert [s.label for s in two.stages if s.stage == "search"] == ["spatial", "naive", "two-in-one"]


def test_bad_requests_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="not compared"):
        protocols.plan("pearson-paper", "140k", methods=["kdfs", "lth"])
    with pytest.raises(ValueError, match="--reference"):
        protocols.plan("pearson-paper", str(tmp_path))  # your own folder: say which published row it is compared with
    assert protocols.plan("pearson-paper", str(tmp_path), reference="190k").reference == "190k"
    with pytest.raises(ValueError, match="unknown protocol"):
        protocols.plan("kdfs-paper", "140k")
    with pytest.raises(ValueError, match="distinct"):
        protocols.plan("pearson-paper", "140k", seeds=[1, 1])


@pytest.mark.parametrize("protocol, dataset", [("two-in-one", "ffpp"), ("lottery-tickets", "openforensics"),
                                               ("lottery-tickets", "ffpp")])
def test_the_video_benchmark_protocols_plan_without_their_data(protocol, dataset, tmp_path):
    """The papers' own datasets, planned by name with nothing on disk; --data-root reaches every stage's command."""
    from cli_support import cli_json

    root = str(tmp_path / f"{dataset}-frames")  # not there: planning needs none of the data
    plan = cli_json("reproduce", protocol, "--dataset", dataset, "--data-root", root, "--dry-run")
    runs = plan["runs"]
    if protocol == "two-in-one":
        assert [(r["stage"], r["label"]) for r in runs[:4]] == [("teacher", "dual_resnet18"), ("search", "spatial"),
                                                                ("search", "naive"), ("search", "two-in-one")]
        assert len(runs) == 1 + 3 * 3 and runs[0]["config"]["arch"]["value"] == "dual_resnet18"
    else:
        assert [(r["method"], r["label"], r["seed"]) for r in runs] == [
            ("lth", arch, seed) for seed in (0, 1, 2) for arch in ("mesonet", "cnn5", "resnet18")]
    for run in runs:
        command = run["command"]
        assert command[command.index("--data") + 1] == dataset and command[command.index("--data-root") + 1] == root
        assert run["config"]["data"]["value"] == dataset
    notes = " ".join(plan["notes"])
    assert f"split of {dataset}, as its adapter reads them" in notes
    assert ("splits/{train,val,test}.json decide the split" if dataset == "ffpp" else "Train/Val/Test-Dev kept") in notes
    if protocol == "two-in-one":  # the paper's cross-dataset targets: how to add them
        assert "--cross celebdf=DIR,dfdc=DIR" in notes and plan["cross"] == []
    without_root = protocols.plan(protocol, dataset, seeds=[0])
    assert all("--data-root" not in s.command for s in without_root.stages)
    assert any("needs --data-root" in note for note in without_root.notes)


def test_cross_targets_are_planned_and_a_bad_one_or_an_unknown_dataset_is_one_line(tmp_path, capsys):
    from core.__main__ import main

    plan = protocols.plan("two-in-one", "ffpp", seeds=[0], cross=f"celebdf=/data/celebdf-frames,{tmp_path / 'dfdc'}")
    assert plan.record()["cross"] == ["celebdf=/data/celebdf-frames", str(tmp_path / "dfdc")]
    assert any(note.startswith("cross-dataset: the report also tests every run on celebdf=") for note in plan.notes)
    for argv, message in (
            (["two-in-one", "--dataset", "nosuch"], "error: unknown dataset 'nosuch': pass one of"),
            (["lottery-tickets", "--dataset", "synthetic:nosuch"], "error: unknown synthetic source"),
            (["two-in-one", "--dataset", "ffpp", "--cross", "celebdf"], "error: --cross celebdf: give its folder")):
        assert main(["reproduce", *argv, "--dry-run", "--json", "--quiet"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith(message) and captured.err.count("\n") == 1, captured.err


def test_presets_declare_each_value_once_with_its_source():
    """In every layered preset: `ours` sets no key path that `published` or `author-code` sets (our choices never hide
    the paper's or its code's), every published and author-code value has a reference and every one of ours a reason;
    an author-code value at a published key is a departure, listed in docs/reproducing-papers.md."""
    from core.config import layer_note, sourced_layers

    def leaves(block: dict, path: str) -> dict[str, object]:
        found = {}
        for key, value in block.items():
            if isinstance(value, dict):
                found.update(leaves(value, f"{path}.{key}"))
            else:
                found[f"{path}.{key}"] = value
        return found

    layered = {name: preset for name, preset in load_presets().items() if "published" in preset}
    assert {"rvf10k", "140k", "190k", "gravex200k", "deepfake330k", "ntu"} <= set(layered)
    departures = set()
    for name, preset in layered.items():
        layers = dict(sourced_layers(preset))
        paths = {source: {**leaves(layer.get("train", {}), "train"), **leaves(layer.get("methods", {}), "methods")}
                 for source, layer in layers.items()}
        assert not set(paths["ours"]) & (set(paths["published"]) | set(paths["author-code"])), name
        for source, found in paths.items():
            for path in found:
                assert layer_note(layers[source], source, path), f"{name}: {source} {path} says nothing of where it comes from"
        departures |= {path.rsplit(".", 1)[-1] for path in set(paths["author-code"]) & set(paths["published"])}
    assert {"kd_scale", "feature_stages", "feature_decoders", "correlation_normalization"} <= departures
    documented = (REPO / "docs" / "reproducing-papers.md").read_text()
    assert all(f"`{name}`" in documented for name in departures), "every departure is listed with its source"
    assert [d for d in KDFS if published_finetune(d, "kdfs")] == list(FINETUNE_LR)
    assert all(published_finetune(d, "pdd") for d in KDFS)
    published = yaml.safe_load((CONFIG_DIR / "protocols.yaml").read_text())["pearson-paper"]["published"]
    assert published["deepfake330k"]["pearson"]["accuracy"] == 90.79 and published["140k"]["teacher"]["accuracy"] == 94.73


def test_a_protocol_runs_once_resumes_and_reports_published_beside_measured(tiny_benchmark, tmp_path):
    """The mini protocol's machinery on a tiny network: every stage, the report, a rerun that trains nothing,
    and a run interrupted mid-protocol that is resumed, not restarted."""
    from core.runs import Run

    small = {"batch_size": 8, "max_train_samples": 24, "max_eval_samples": 12, "num_workers": 0, "epochs": 1}
    extra = {"train": {"image_size": 32, **small}, "finetune": small, "transfer": {**small, "lr_grid": "1e-3"},
             "train:teacher": {"arch": "resnet-tiny", "pretrained": "none", "trainable": "all"},
             "train:kdfs": {"arch": "resnet-tiny"}}  # PDD keeps its ResNet-18 student
    runs_dir = tmp_path / "runs"
    plan = protocols.plan("pearson-paper", "synthetic", scale="full", seeds=[0], methods=["kdfs", "pdd"],
                          runs_dir=runs_dir, extra=extra, transfer="synthetic:gan")
    assert [(s.stage, s.method) for s in plan.stages] == [("teacher", "teacher"), ("search", "kdfs"), ("transfer", "kdfs"),
                                                          ("search", "pdd"), ("finetune", "pdd"), ("transfer", "pdd")]
    transfer = plan.stages[2].sources
    assert (transfer["optimizer"]["value"], transfer["optimizer"]["source"]) == ("adamw", "published")
    assert plan.stages[5].command[1] == "{finetune/pdd/0}", "Table 8 transfers the final (fine-tuned) student"
    result = protocols.run(plan, out=tmp_path / "report", progress=False)
    run_dirs = sorted(p.parent for p in runs_dir.glob("*/config.json"))
    assert len(run_dirs) == 6 and all(Run(d).status()["status"] == "finished" for d in run_dirs)
    transferred = [Run(d).config() for d in run_dirs if Run(d).config()["method"] == "transfer"]
    assert sorted(c["data"] for c in transferred) == ["synthetic:gan"] * 2 and "transfer" in result["report"]["tables"]
    rows = {row["method"]: row for row in result["rows"]}
    assert set(rows) == {"teacher", "kdfs", "pdd"} and rows["teacher"]["macs_reduction"] == 0
    assert rows["kdfs"]["published"]["flops_reduction"] == 81.77  # synthetic data: the 140k row is the reference
    assert 0 < rows["pdd"]["macs_reduction"] < 1 and rows["pdd"]["arch"] == "resnet18"
    finetuned = [r for r in result["runs"] if r["stage"] == "finetune"][0]
    assert (finetuned["config"]["optimizer"]["value"], finetuned["config"]["optimizer"]["source"]) == ("sgd", "published")
    assert json.loads((Path(finetuned["run_dirs"][0]) / "config.json").read_text())["init_checkpoint"].endswith(
        "last.safetensors")
    table = (tmp_path / "report" / "published.md").read_text()
    assert "99.25 ± 0.03" in table and "81.77" in table and "kdfs" in table
    assert "published beside measured" in (tmp_path / "report" / "report.md").read_text()

    again = protocols.run(plan, out=tmp_path / "report2", progress=False)  # everything found: nothing trains
    assert sorted(p.parent for p in runs_dir.glob("*/config.json")) == run_dirs
    assert [r["run_dirs"] for r in again["runs"]] == [r["run_dirs"] for r in result["runs"]]

    pdd_search = Path([r for r in result["runs"] if r["stage"] == "search" and r["method"] == "pdd"][0]["run_dirs"][0])
    status = json.loads((pdd_search / "status.json").read_text())
    (pdd_search / "status.json").write_text(json.dumps({**status, "status": "running", "pid": 2**22 + 12345}))
    assert Run(pdd_search).status()["status"] == "interrupted"
    protocols.run(plan, out=tmp_path / "report3", progress=False)
    assert sorted(p.parent for p in runs_dir.glob("*/config.json")) == run_dirs, "resumed in place, not restarted"
    assert Run(pdd_search).status()["status"] == "finished"
    assert "resum" in (pdd_search / "log.txt").read_text()
