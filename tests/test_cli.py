"""The command line as docs/interfaces.md describes it: --help, --json last line, one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.__main__ import main
from core.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def _run(capsys, argv: list[str]) -> tuple[int, dict | None, str]:
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines else None), captured.err


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser, the line its parent lists it with) for the root and every command and sub-command."""
    yield path, parser, None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                for found in _commands(sub, (*path, name)):
                    yield found if found[0] != (*path, name) else (found[0], found[1], listed[name])


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_enumerated():
    paths = {" ".join(path) for path, _, _ in COMMANDS}
    assert {"", "data", "data synth", "data info", "train", "evaluate", "report", "profile", "export", "bench", "predict",
            "ood", "ood fit", "video", "reproduce"} <= paths
    assert len(paths) >= 20


@pytest.mark.parametrize("path", [path for path, _, _ in COMMANDS], ids=lambda path: " ".join(path) or "(root)")
def test_help_everywhere(path, capsys):
    """``--help`` of every command and sub-command exits 0 and shows its usage, what it does, its options and actions."""
    parser, listed = next((parser, listed) for p, parser, listed in COMMANDS if p == path)
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(" ".join(["usage: python -m core", *path]))
    words = " ".join(shown.split())  # argparse wraps lines: compare with the whitespace collapsed
    if listed:
        assert " ".join(listed.split()) in words, "the command's own --help says what its parent's listing says"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.dest in shown and " ".join(choice.help.split()) in words, choice.dest
        elif action.option_strings:
            assert all(option in shown for option in action.option_strings), action.option_strings
            if action.help:
                assert " ".join(action.help.split()).split("%(")[0] in words, action.option_strings
        elif action.choices and not action.metavar:  # a positional shown as {choice,...}
            assert all(str(choice) in shown for choice in action.choices), action.dest
        else:
            assert (action.metavar or action.dest) in shown, action.dest
    if parser.get_default("func"):
        assert "--json" in shown and "--quiet" in shown, "every command has --json and --quiet"


def test_entry_point_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "core", "profile", "--arch", "resnet18", "--json"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["params"] == 11_177_025 and abs(last["macs"] / 1e6 - 2381) / 2381 < 0.01


def test_profile_json(capsys):
    code, result, _ = _run(capsys, ["profile", "--arch", "resnet50", "--image-size", "256", "--json"])
    assert code == 0
    assert round(result["params"] / 1e6, 2) == 23.51
    assert abs(result["macs"] / 1e6 - 5390) / 5390 < 0.01


def test_data_synth_json(tmp_path, capsys):
    code, result, _ = _run(capsys, ["data", "synth", "--out", str(tmp_path / "s"), "--image-size", "16",
                                    "--per-source", "20", "--workers", "1", "--quiet", "--json"])
    assert code == 0
    assert result["root"] == str(tmp_path / "s") and len(result["sources"]) == 5
    assert result["counts"]["gan"]["train"] == {"real": 7, "fake": 7}


def test_train_evaluate_profile_round_trip(tiny_train_args, capsys):
    code, trained, err = _run(capsys, ["train", *tiny_train_args, "--epochs", "1", "--quiet", "--json"])
    assert code == 0, err
    assert trained["status"] == "finished" and Path(trained["checkpoint"]).is_file()

    code, evaluated, _ = _run(capsys, ["evaluate", trained["run_dir"], "--data", "synthetic:gan", "--quiet", "--json"])
    assert code == 0
    assert {"accuracy", "auc", "eer", "ap", "n", "skipped"} <= set(evaluated)
    assert evaluated["n"] == 12 and evaluated["skipped"] == 0
    assert set(evaluated["per_source"]) == {"gan"}

    code, profiled, _ = _run(capsys, ["profile", trained["checkpoint"], "--json"])
    assert code == 0 and profiled["params"] > 0


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "/nonexistent/model.safetensors", "--data", "synthetic"], "no such checkpoint"),
    (["train", "--data", "/nonexistent/folder", "--epochs", "1"], "unknown dataset"),
    (["train", "--preset", "nope"], "unknown preset"),
    (["train", "--arch", "resnet999", "--data", "synthetic:gan", "--epochs", "1"], "unknown architecture"),
    (["data", "info", "synthetic:nope"], "nope"),
    (["profile"], "exactly one"),
    (["data", "synth", "--difficulty", "3", "--out", "/tmp/never"], "difficulty"),
])
def test_bad_input_is_one_clear_line(argv, message, capsys, tiny_benchmark, tmp_path):
    code = main([*argv, "--quiet"] if argv[0] != "data" or argv[1] != "info" else argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)
