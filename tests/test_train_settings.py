"""The training configuration is declared once (core.config.TrainConfig with core.options.option): the flags, the
checks, the preset checks, the sidebar's widgets and the docs' table all come from that declaration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import core.config
from core.cli import build_parser
from core.config import TrainConfig, build_config, check_domains, training_settings
from core.options import option
from scripts.docs_numbers import render, settings_table

REPO = Path(__file__).resolve().parents[1]


@dataclass
class WithANewSetting(TrainConfig):
    """TrainConfig with one more setting, declared as every setting is, and nothing else changed anywhere."""

    label_smoothing: float = option(0.0, "BCE targets pulled toward 0.5 by this much", label="Label smoothing",
                                    low=0, high=0.5)


@pytest.fixture
def new_setting(monkeypatch, tiny_benchmark):
    monkeypatch.setattr(core.config, "TrainConfig", WithANewSetting)


def _help(command: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return " ".join(subparsers.choices[command].format_help().split())


def test_a_new_setting_reaches_the_flags_the_checks_the_table_and_the_sidebar(new_setting):
    for command in ("train", "finetune", "transfer"):
        assert "--label-smoothing LABEL_SMOOTHING BCE targets pulled toward 0.5 by this much (default 0.0)" in _help(command)
    arguments = build_parser().parse_args(["train", "--data", "synthetic", "--label-smoothing", "0.1"])
    from core.training.requests import train_configs

    [config] = train_configs(arguments)
    assert isinstance(config, WithANewSetting) and config.label_smoothing == 0.1
    with pytest.raises(ValueError, match=r"^label-smoothing must be a number >= 0 and <= 0.5, got 0.7$"):
        check_domains(build_config(label_smoothing=0.7))
    with pytest.raises(ValueError, match="preset p.train: label-smoothing must be a number >= 0 and <= 0.5, got -1"):
        from core.methods import check_presets

        check_presets({"p": {"train": {"label_smoothing": -1}}})
    table = settings_table()
    assert "| `--label-smoothing` | `0.0` | >= 0 and <= 0.5 | BCE targets pulled toward 0.5 by this much | " \
           "Label smoothing |" in table
    assert settings_table() in render((REPO / "docs" / "training.md").read_text())
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=60).run()
    widget = app.sidebar.number_input(key="launch_label-smoothing")
    assert widget.label == "Label smoothing" and widget.min == 0 and widget.max == 0.5 and widget.value is None


def test_without_it_nothing_of_it_shows(tiny_benchmark):
    assert "--label-smoothing" not in _help("train") and "--label-smoothing" not in settings_table()
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=60).run()
    assert "launch_label-smoothing" not in [w.key for w in app.sidebar.number_input]
    assert [w.label for w in app.sidebar.number_input if w.key in (
        "launch_epochs", "launch_batch-size", "launch_lr", "launch_max-train-samples")] == [
        "Epochs", "Batch size", "Learning rate", "Max training images (a quick look)"]


def test_every_setting_is_declared_and_every_flag_sets_it():
    """Each field of TrainConfig has a declaration; each one that is not internal is a flag of ``train`` whose value
    reaches the config (a value other than its default, read back)."""
    declared = {s.name: s for s in training_settings()}
    assert set(declared) == {f.name for f in dataclasses.fields(TrainConfig)}
    internal = {name for name, s in declared.items() if s.internal}
    assert internal == {"method", "init_checkpoint", "preset", "method_options"}
    given = {"data": "synthetic:faceswap", "data_root": "/x", "arch": "resnet18", "pretrained": "imagenet",
             "trainable": "layer4", "image_size": 32, "epochs": 3, "batch_size": 7, "optimizer": "sgd", "lr": 0.5,
             "weight_decay": 0.25, "momentum": 0.5, "scheduler": "step", "step_size": 2, "warmup_epochs": 1,
             "early_stopping_patience": 2, "early_stopping_metric": "loss", "augment": "none", "max_train_samples": 9,
             "max_eval_samples": 8, "num_workers": 0, "seed": 5, "device": "cpu", "amp": False, "channels_last": False,
             "log_every": 3, "nonfinite": "skip", "nonfinite_max_skips": 4, "runs_dir": "/r", "teacher": "t",
             "follow": "paper"}
    assert set(given) == set(declared) - internal
    argv = ["train"] + [part for name, value in given.items() for part in (f"--{declared[name].flag}", str(value))]
    from core.training.requests import train_configs

    [config] = train_configs(build_parser().parse_args(argv))
    assert {name: getattr(config, name) for name in given} == given
    check_domains(config)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("epochs", 0, "epochs must be a number >= 1, got 0"),
    ("lr", 0.0, "lr must be a number > 0, got 0.0"),
    ("optimizer", "lion", "optimizer must be one of adam, adamw, adamax, sgd, got 'lion'"),
    ("augment", "heavy", "augment must be one of paper, light, none, got 'heavy'"),
    ("early_stopping_patience", 0, "patience must be a number >= 1, got 0"),
    ("nonfinite_max_skips", -1, "nonfinite-max-skips must be a number >= 0, got -1"),
    ("amp", "maybe", "amp must be true or false, got 'maybe'"),
    ("epochs", 2.5, "epochs must be a number >= 1, got 2.5"),
])
def test_a_value_outside_its_domain_is_refused_naming_the_flag(name, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_domains(dataclasses.replace(TrainConfig(), **{name: value}))


def test_finetune_and_transfer_leave_out_what_the_checkpoint_fixes():
    assert "--arch" not in _help("finetune") and "--trainable" not in _help("finetune")
    assert "--teacher" in _help("finetune") and "--teacher" not in _help("transfer")
    assert "--trainable" in _help("transfer") and "--weight-decay" in _help("transfer")


def test_a_yaml_file_is_parsed_once_until_it_changes_and_each_caller_gets_its_own_copy(tmp_path, monkeypatch):
    """core.config.parsed_yaml: the presets are read once per resolved setting (a reproduce plan: hundreds of times),
    so the parse is kept by the file's modification time and size; an edited file is parsed again."""
    import os

    import yaml

    from core import config

    path = tmp_path / "presets.yaml"
    path.write_text("_base: &base {lr: 0.1}\nquick: {<<: *base, epochs: 2}\n")
    parses = []
    real = yaml.load

    def counting(text, Loader):  # noqa: N803 - yaml's own keyword
        parses.append(text)
        return real(text, Loader=Loader)

    monkeypatch.setattr(config.yaml, "load", counting)
    first = config.parsed_yaml(path)
    first["quick"]["lr"] = 99.0  # a caller's change stays in its copy
    second = config.parsed_yaml(path)
    assert second == {"_base": {"lr": 0.1}, "quick": {"lr": 0.1, "epochs": 2}} and len(parses) == 1
    path.write_text("quick: {lr: 0.2, epochs: 3}\n")
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    assert config.parsed_yaml(path) == {"quick": {"lr": 0.2, "epochs": 3}} and len(parses) == 2
