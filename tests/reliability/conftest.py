"""Fixtures of the reliability suite (faults, bad input, security): a tiny teacher to distil from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reliability_support


@pytest.fixture(scope="session")
def tiny_teacher(tiny_benchmark, tmp_path_factory) -> Path:
    """A one-epoch resnet-tiny teacher run on the tiny benchmark (seconds)."""
    from core.config import build_config
    from core.training.engine import train

    config = build_config(method="teacher", data="synthetic", arch="resnet-tiny", image_size=32, epochs=1, batch_size=16,
                          num_workers=0, max_train_samples=48, max_eval_samples=24,
                          runs_dir=str(tmp_path_factory.mktemp("teacher")))
    return train(config, progress=False).run_dir
