"""Shared fixtures. The tests never touch the real data/ or runs/ folders: a tiny
benchmark is generated once per session into a temporary CORE_DATA_DIR."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # shared test helpers (streamlit_server)

TINY_SYNTH = {"image_size": 32, "per_source": 60}


# the suite's only opt-ins from the environment; every other CORE_* setting of the person running it is dropped
OPT_INS = ("CORE_TEST_SLURM", "CORE_SCREENSHOTS")


def _isolate_from_the_machine(base: Path) -> None:
    """Nothing the suite sees comes from whoever runs it: no CORE_* settings (presets, method paths, devices, pause
    points), and a fresh, empty home folder, so no Streamlit or matplotlib config, no torch hub weights and no cache
    of an earlier run is read from ``~``. What the suite needs from the machine is what ``scripts/install.sh`` installs
    (the venv, Debian's chromium); a test that needs more skips with the reason."""
    for name in [name for name in os.environ if name.startswith("CORE_") and name not in OPT_INS]:
        del os.environ[name]
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(home)
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "TORCH_HOME", "MPLCONFIGDIR"):
        os.environ.pop(name, None)


def pytest_configure(config):
    base = Path(os.environ.get("PYTEST_CORE_TMP", "/tmp")) / f"core-tests-{os.getpid()}"
    _isolate_from_the_machine(base)
    os.environ["CORE_DATA_DIR"] = str(base / "data")
    os.environ["CORE_CACHE_DIR"] = str(base / "cache")
    os.environ["CORE_RUNS_DIR"] = str(base / "runs")
    os.environ.setdefault("CORE_DEVICE", "cpu")
    # core.load_model, predict, video and the dashboard serve with `auto` by default, which exports and times every
    # runtime once per checkpoint: the suite's many tiny checkpoints are served by PyTorch, and tests/test_runtimes.py
    # (which removes this) tests auto itself
    os.environ["CORE_RUNTIME"] = "torch"
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_benchmark() -> Path:
    """A 5-source, 32 px benchmark with 60 images per source (train 42 / val 6 / test 12)."""
    from core.data.synthetic import SynthConfig, default_root, ensure_benchmark

    return ensure_benchmark(default_root(), SynthConfig(**TINY_SYNTH), progress=False)


@pytest.fixture()
def tiny_train_args(tiny_benchmark, tmp_path) -> list[str]:
    """CLI flags for a seconds-long teacher run on the tiny benchmark."""
    return ["--method", "teacher", "--data", "synthetic", "--arch", "resnet-tiny", "--image-size", "32",
            "--epochs", "2", "--batch-size", "16", "--num-workers", "0", "--runs-dir", str(tmp_path / "runs")]


# Parametrisations that repeat a faster sibling on another method: `make test-all` runs them, `make test` (CI) not.
# Kill and resume: every kill point on the teacher, and mid-epoch on Pearson (a masked student's extra state).
SLOW_DUPLICATES = tuple(f"test_kill_resume.py::test_sigkill_then_resume_is_bit_identical[{case}]"
                        for case in ("kdfs-mid-epoch", "kdfs-mid-checkpoint-write", "kdfs-during-validation",
                                     "pearson-mid-checkpoint-write", "pearson-during-validation"))


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.endswith(SLOW_DUPLICATES):
            item.add_marker(pytest.mark.slow)


def pytest_unconfigure(config):
    import shutil

    data_dir = os.environ.get("CORE_DATA_DIR")
    if data_dir and Path(data_dir).parent.name.startswith("core-tests-"):
        shutil.rmtree(Path(data_dir).parent, ignore_errors=True)
