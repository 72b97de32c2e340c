"""docs/adding-a-method.md, done as it says: one method file and one preset entry, nothing else touched.

The method's code and preset are read from the page itself, so the page cannot drift from what works.
The file goes into a folder of $CORE_METHOD_PATH, the preset into a file of $CORE_PRESETS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.training.requests import command_line

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "adding-a-method.md"


@pytest.fixture()
def plugin(tmp_path, monkeypatch) -> dict[str, str]:
    """The page's method file and preset entry on disk, and the environment that points at them."""
    page = PAGE.read_text()
    (code,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    (preset,) = re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "logit_decay.py").write_text(code)
    (tmp_path / "presets.yaml").write_text(preset)
    env = {"CORE_METHOD_PATH": str(tmp_path / "methods"), "CORE_PRESETS": str(tmp_path / "presets.yaml")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


def cli(arguments: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *arguments], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_method_from_one_file_shows_in_train_help_and_reproduce(plugin):
    shown = cli(["train", "--help"], plugin)
    assert shown.returncode == 0, shown.stderr
    assert "logit-decay" in shown.stdout and "--decay DECAY" in shown.stdout and "weight of the mean squared logit" in shown.stdout

    planned = cli(["reproduce", "pearson-paper", "--dataset", "synthetic:faceswap", "--scale", "mini", "--seeds", "0",
                   "--dry-run", "--json"], plugin)
    assert planned.returncode == 0, planned.stderr
    runs = json.loads(planned.stdout.strip().splitlines()[-1])["runs"]
    searches = [run for run in runs if run["stage"] == "search"]
    assert [run["method"] for run in searches] == ["kdfs", "pearson", "pdd", "logit-decay"], "compared beside the papers'"
    toy = searches[-1]
    assert toy["config"]["method_options"] == {"decay": {"value": 0.05, "source": "ours", "ref": "a toy method: no paper "
                                                                                              "gives it settings"}}, \
        "the preset entry's value, checked against the declaration, with its reason"

    refused = cli(["train", "--method", "logit-decay", "--decay", "-1", "--data", "synthetic:faceswap"], plugin)
    assert refused.returncode == 2 and "decay must be >= 0, got -1" in refused.stderr


def test_the_new_method_trains_end_to_end(plugin, tiny_benchmark, tmp_path):
    trained = cli(["train", "--method", "logit-decay", "--data", "synthetic:faceswap", "--arch", "resnet-tiny",
                   "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--num-workers", "0", "--decay", "0.5",
                   "--runs-dir", str(tmp_path / "runs"), "--quiet", "--json"], plugin)
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert config["method"] == "logit-decay" and config["method_options"] == {"decay": 0.5}
    steps = [json.loads(line) for line in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert any("squared_logit" in record for record in steps if record.get("type") == "step"), "its own loss term is logged"


def test_a_misspelt_preset_option_is_refused_naming_the_preset(plugin, tmp_path):
    (tmp_path / "presets.yaml").write_text("140k:\n  ours:\n    methods:\n      logit-decay: {method_options: {dekay: 1}}\n")
    refused = cli(["train", "--method", "logit-decay", "--preset", "140k", "--data", "synthetic:faceswap"], plugin)
    assert refused.returncode == 2 and "140k.methods.logit-decay" in refused.stderr and "dekay" in refused.stderr


def test_the_sidebar_offers_the_new_method_with_its_declared_input(plugin, tiny_benchmark, tmp_path, monkeypatch):
    from core import launcher, methods

    before = dict(methods.METHODS)
    methods.discover()  # this process imported the registry before the environment named the folder
    try:
        launched = []
        monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
        monkeypatch.setattr(launcher, "launch", lambda request, runs_dir, gpus="one", user=None, max_per_user=None:
                            launched.append(command_line("train", request)[1:])
                            or launcher.Launched("x", 4242))
        app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120).run()
        assert "logit-decay" in app.sidebar.selectbox(key="launch_method").options
        app.sidebar.selectbox(key="launch_method").set_value("logit-decay").run()
        app.sidebar.radio(key="launch_data_kind").set_value("Embedded benchmark")
        app.sidebar.selectbox(key="launch_source").set_value("faceswap")
        assert app.sidebar.selectbox(key="launch_arch").options == ["resnet18", "resnet50"]
        decay = app.sidebar.number_input(key="launch_decay")
        assert decay.label == "Logit decay" and decay.min == 0
        decay.set_value(0.25).run()
        app.sidebar.button(key="launch_button").click().run()
        assert not app.exception and launched
        (arguments,) = launched
        assert arguments[:8] == ["--method", "logit-decay", "--data", "synthetic:faceswap", "--arch", "resnet18",
                                 "--decay", "0.25"]
    finally:
        methods.METHODS.clear()
        methods.METHODS.update(before)
