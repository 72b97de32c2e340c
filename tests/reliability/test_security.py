"""Security: nothing is executed from files, the dashboard binds loopback with upload limits and XSRF protection,
paths typed by users are resolved and checked, runs write only under the runs directory, and processes are
started from argument lists, never a shell string."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tomllib
import torch
from reliability_support import REPO, assert_one_line_error, cli

import core
from core.checkpoint import (
    PT_FORMAT,
    TRAINER_STATE,
    CheckpointError,
    load_checkpoint,
    load_trainer_state,
    read_header,
    save_checkpoint,
)
from core.models import build_model
from core.runs import Run

# ------------------------------------------------------------------------------------ no code execution from files


class RunsCode:
    """Unpickling this calls ``os.system("touch <marker>")``: what a booby-trapped checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def planted(tmp_path) -> dict[str, Path]:
    """Booby-trapped files in every container a loader might see, and the marker their code would create."""
    marker = tmp_path / "code-ran"
    trap = RunsCode(marker)
    header = {"model": {"type": "resnet", "arch": "resnet-tiny"}, "image_size": 32, "format_version": 1,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    files = {"marker": marker, "zip.pt": tmp_path / "evil.pt", "legacy.pt": tmp_path / "evil-legacy.pt",
             "raw.safetensors": tmp_path / "evil.safetensors", "state.pt": tmp_path / "trainer_state.pt"}
    torch.save({"format": PT_FORMAT, "header": header, "state_dict": {"conv1.weight": trap}}, files["zip.pt"])
    torch.save({"format": PT_FORMAT, "header": header, "state_dict": trap}, files["legacy.pt"],
               _use_new_zipfile_serialization=False)
    files["raw.safetensors"].write_bytes(pickle.dumps({"weights": trap}))
    torch.save({"epoch": 1, "model": trap}, files["state.pt"])
    return files


def test_the_planted_files_really_run_code_when_unpickled(planted):
    """Control: a plain ``torch.load`` (weights_only=False) or ``pickle.load`` of them does run the code (in a child)."""
    for name in ("zip.pt", "legacy.pt", "state.pt"):
        subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(planted[name])!r}, weights_only=False)"],
                       capture_output=True, timeout=120)
        assert planted["marker"].exists(), name
        planted["marker"].unlink()
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(planted['raw.safetensors'])!r}, 'rb'))"],
                   timeout=60)
    assert planted["marker"].exists()
    planted["marker"].unlink()


@pytest.mark.parametrize("name", ["zip.pt", "legacy.pt", "raw.safetensors", "state.pt"])
def test_loaders_refuse_a_pickle_that_runs_code(planted, name):
    for load in (core.load_model, read_header, load_checkpoint):
        with pytest.raises(CheckpointError):
            load(planted[name])
    with pytest.raises(CheckpointError, match="unreadable trainer state"):
        load_trainer_state(planted[name])
    from core.models.registry import load_pretrained_state

    with pytest.raises(ValueError, match="not a readable weights file"):
        load_pretrained_state("resnet-tiny", str(planted[name]))
    assert not planted["marker"].exists(), "the planted code ran"


def test_cli_refuses_a_pickle_that_runs_code(planted, tiny_teacher, tmp_path, capsys):
    evil = str(planted["zip.pt"])
    for argv in (["evaluate", evil, "--data", "synthetic:gan"], ["profile", evil], ["export", evil, "--out", str(tmp_path / "x.pt")],
                 ["finetune", evil, "--epochs", "1"], ["video", evil, "--checkpoint", evil],
                 ["train", "--method", "kdfs", "--data", "synthetic", "--arch", "resnet-tiny", "--teacher", evil,
                  "--runs-dir", str(tmp_path / "runs")],
                 ["train", "--data", "synthetic", "--arch", "resnet-tiny", "--pretrained", evil, "--epochs", "1",
                  "--max-train-samples", "8", "--runs-dir", str(tmp_path / "runs")]):
        code, _, err = cli(argv, capsys)
        assert_one_line_error(code, err, "evil.pt")
    assert not planted["marker"].exists(), "the planted code ran"


def test_resume_refuses_a_planted_trainer_state(planted, tiny_teacher, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_teacher, run_dir)
    shutil.copy(planted["state.pt"], run_dir / TRAINER_STATE)
    Run(run_dir).set_status("cancelled")  # a run to resume (a finished one is left as it is: nothing is read)
    code, _, err = cli(["train", "--resume", str(run_dir)], capsys)
    assert_one_line_error(code, err, "unreadable trainer state")
    assert not planted["marker"].exists(), "the planted code ran"


def test_dashboard_listing_shows_a_planted_checkpoint_as_an_error(planted):
    from core.catalog import checkpoint_rows

    (row,) = checkpoint_rows(planted["raw.safetensors"].parent)
    assert row["checkpoint"] == "evil.safetensors" and "not a safetensors checkpoint" in row["error"]
    assert not planted["marker"].exists()


def test_no_loader_unpickles_code():
    """Every torch.load in the code asks for weights only; nothing calls pickle or numpy with pickles allowed."""
    sources = [p for folder in ("core", "dashboard") for p in (REPO / folder).rglob("*.py")]
    loads = [(p, line) for p in sources for line in p.read_text().splitlines() if "torch.load(" in line and "`" not in line]
    assert loads and all("weights_only=True" in line for _, line in loads), loads
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bpickle\.loads?\(|allow_pickle=True|\bdill\b|joblib\.load", text), path


# ------------------------------------------------------------------------------------ the dashboard server


def test_streamlit_config_binds_loopback_with_limits_and_xsrf():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["address"] == "127.0.0.1"
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert 0 < server["maxUploadSize"] <= 200 and server["maxMessageSize"] <= 200
    assert config["browser"]["gatherUsageStats"] is False


def _listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_streamlit_started_without_flags_listens_only_on_loopback(tiny_benchmark):
    """``streamlit run dashboard/Home.py`` from the repository root, no --server.address: the config file decides."""
    import urllib.request

    from streamlit_server import free_port, serve

    port = free_port()
    process = serve(port)
    try:
        assert _listening_addresses(process.pid, port) == {"0100007F"}, "127.0.0.1 only"
        # an upload without the XSRF cookie and token is refused before anything else is looked at (without XSRF
        # protection the same request gets 400, an unknown session)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/_stcore/upload_file/session/file", data=b"x", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403 and b"XSRF" in refused.value.read()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_make_run_starts_streamlit_from_the_repository_root_on_loopback():
    makefile = (REPO / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "streamlit run dashboard/Home.py" in run and "--server.address 127.0.0.1" in run and "cd " not in run


# ------------------------------------------------------------------------------------ paths and processes


@pytest.mark.parametrize(("method", "data"), [("teacher", "../../etc"), ("../x", "/abs/path/to/data"), ("kdfs", "a/b\\c:d"),
                                              ("..", ".."), ("", ""), ("teacher", "données-ünïcode/$(rm -rf ~)")])
def test_run_directories_stay_under_the_runs_directory(tmp_path, method, data):
    from core.runs import Run

    runs = tmp_path / "runs"
    run = Run.create(runs, method, data)
    assert run.dir.resolve().parent == runs.resolve() and re.fullmatch(r"[A-Za-z0-9-]+", run.dir.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_dataset_path_with_dot_dots_writes_its_run_inside_the_runs_directory(tiny_benchmark, tmp_path, capsys):
    from core.data.synthetic import default_root

    data = os.path.relpath(default_root(), tmp_path / "a" / "b")  # ../../... up and back down
    (tmp_path / "a" / "b").mkdir(parents=True)
    code, _, err = cli(["train", "--data", str(tmp_path / "a" / "b" / data), "--arch", "resnet-tiny", "--image-size", "32",
                        "--epochs", "1", "--max-train-samples", "8", "--max-eval-samples", "8", "--num-workers", "0",
                        "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "runs"] and ".." not in run.name


def test_sidebar_paths_are_resolved_and_checked(tmp_path):
    from core.launcher import check_data_path

    (tmp_path / "faces").mkdir()
    (tmp_path / "list.csv").write_text("path,label\n")
    (tmp_path / "notes.txt").write_text("x")
    assert check_data_path(f"  {tmp_path}/faces/../faces  ") == tmp_path / "faces"
    assert check_data_path(str(tmp_path / "list.csv")) == tmp_path / "list.csv"
    assert check_data_path(str(tmp_path / "faces"), "root") == tmp_path / "faces"
    from core.launcher import REPO

    assert check_data_path("checkpoints") == REPO / "checkpoints"  # relative paths are the repository's (a tracked folder)
    for text, kind, says in [(str(tmp_path / "missing"), "dataset", "does not exist"),
                             (str(tmp_path / "notes.txt"), "dataset", "neither a folder"),
                             (str(tmp_path / "list.csv"), "root", "not a folder"),
                             ("--runs-dir=/etc", "dataset", "does not exist"), ("bad\0path", "dataset", "enter a path"),
                             ("   ", "root", "enter a path")]:
        with pytest.raises(ValueError, match=says):
            check_data_path(text, kind)


def test_sidebar_refuses_a_bad_path_before_launching(tiny_benchmark, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core import launcher

    launched = []
    monkeypatch.setenv("CORE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(launcher, "launch", lambda request, runs_dir, gpus="one", user=None, max_per_user=None:
                        launched.append(request) or launcher.Launched("x", 4242))
    app = AppTest.from_file(str(REPO / "dashboard" / "Home.py"), default_timeout=120)
    app.secrets["access"] = {"data_roots": [str(tmp_path)]}  # the folders this dashboard may read
    app.run()
    app.sidebar.selectbox(key="launch_method").set_value("teacher").run()
    app.sidebar.radio(key="launch_data_kind").set_value("Folder or CSV").run()
    app.sidebar.text_input(key="launch_path").set_value(str(tmp_path / "nowhere")).run()
    assert not app.exception
    assert app.sidebar.error[0].value.startswith("Cannot use this path: ") and "does not exist" in app.sidebar.error[0].value
    assert app.sidebar.button(key="launch_button").disabled
    (tmp_path / "faces").mkdir()  # it exists, but holds no image: nothing to train on
    app.sidebar.text_input(key="launch_path").set_value(f"{tmp_path}/faces/../faces").run()
    assert app.sidebar.error[0].value.startswith("Cannot train on it: ") and app.sidebar.button(key="launch_button").disabled
    shutil.rmtree(tmp_path / "faces")
    shutil.copytree(tiny_benchmark / "faceswap", tmp_path / "faces")  # a dataset: train/val/test of real and fake
    app.sidebar.text_input(key="launch_path").set_value(f"{tmp_path}/faces/../faces").run()
    assert not app.sidebar.error and not app.sidebar.button(key="launch_button").disabled
    app.sidebar.button(key="launch_button").click().run()
    assert launched and launched[0]["data"] == str(tmp_path / "faces")
    app.sidebar.radio(key="launch_data_kind").set_value("Registered dataset").run()
    app.sidebar.text_input(key="launch_root").set_value(str(tmp_path / "missing-root")).run()
    assert "does not exist" in app.sidebar.error[0].value and app.sidebar.button(key="launch_button").disabled


def test_processes_start_from_argument_lists_never_a_shell(tmp_path, monkeypatch):
    from core import launcher

    sources = [p for folder in ("core", "dashboard", "scripts") for p in (REPO / folder).rglob("*.py")]
    for path in sources:
        text = path.read_text()
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|subprocess\.getoutput|commands\.getoutput", text), path
    started = []

    class FakeProcess:
        pid = 999_999

    monkeypatch.setattr(launcher.subprocess, "Popen", lambda command, **kwargs: started.append((command, kwargs)) or FakeProcess())
    hostile = "/data/x; rm -rf ~ #"
    launcher.launch({"method": "teacher", "data": hostile}, tmp_path / "runs")
    launcher.launch({"method": "teacher", "data": hostile}, tmp_path / "runs")
    (command, kwargs), _ = started
    assert isinstance(command, list) and hostile in command and not kwargs.get("shell")
    logs = list((tmp_path / "runs" / ".launches").glob("*.log"))
    assert len(logs) == 2, "two launches in the same second get two logs"


def test_run_create_is_collision_proof(tmp_path, monkeypatch):
    from core import runs as runs_module

    tokens = iter(["aaaa", "aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(runs_module.secrets, "token_hex", lambda n: next(tokens))
    monkeypatch.setattr(runs_module.time, "strftime", lambda fmt: "20990101-000000")
    first = runs_module.Run.create(tmp_path, "teacher", "synthetic")
    second = runs_module.Run.create(tmp_path, "teacher", "synthetic")
    assert first.dir.name.endswith("aaaa") and second.dir.name.endswith("bbbb")
    monkeypatch.undo()
    made, barrier = [], threading.Barrier(16)

    def create():
        barrier.wait()
        made.append(runs_module.Run.create(tmp_path / "many", "teacher", "synthetic").dir)

    threads = [threading.Thread(target=create) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 16 and len(list((tmp_path / "many").iterdir())) == 16


def test_a_checkpoint_header_cannot_point_a_model_at_code(tmp_path):
    """The header only names registered architectures; an unknown type or arch is refused, never imported."""
    model = build_model("resnet-tiny")
    for spec in ({"type": "os.system", "arch": "resnet-tiny"}, {"type": "resnet", "arch": "__import__('os')"}):
        path = tmp_path / "odd.safetensors"
        save_checkpoint(path, model, {"model": spec, "image_size": 32, "normalization": {"mean": [0] * 3, "std": [1] * 3}})
        with pytest.raises(CheckpointError, match="this version can build"):
            core.load_model(path)
