"""Fuzzing the loaders of untrusted files with hypothesis: whatever the bytes, the image loader returns an RGB
image or raises ImageLoadError, and the checkpoint loaders return a model/header/state or raise CheckpointError.
Nothing else escapes (no IndexError, struct.error, KeyError, ...), so callers need to catch one class.

Seeds are fixed (``derandomize``) so the suite is repeatable; to search harder, raise ``$FUZZ_EXAMPLES`` and set
``$FUZZ_RANDOM=1`` (new random examples each run).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import core
from core.checkpoint import CheckpointError, load_trainer_state, read_header, save_checkpoint, save_pt
from core.data.images import ImageLoadError, load_image
from core.models import build_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


_IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
SEEDS = {
    "png": _encode(_IMAGE, "PNG"),
    "jpeg": _encode(_IMAGE, "JPEG", quality=80),
    "gif": _encode(_IMAGE.convert("P"), "GIF"),
    "bmp": _encode(_IMAGE, "BMP"),
    "tiff": _encode(_IMAGE, "TIFF"),
    "webp": _encode(_IMAGE, "WEBP"),
    "png16": _encode(Image.fromarray((np.arange(768).reshape(24, 32) * 80).astype(np.uint16)), "PNG"),
}


@st.composite
def mutated(draw, seed: bytes, head: int = 512) -> bytes:
    """``seed`` with a few bytes overwritten (often in its first ``head`` bytes, where headers live), some inserted
    or deleted, or cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "flip", "insert", "delete", "truncate"]))
        limit = min(len(data), head) if draw(st.booleans()) else len(data)
        if not data:
            break
        position = draw(st.integers(0, max(0, limit - 1)))
        if kind == "flip":
            data[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position:position + draw(st.integers(1, 16))]
        else:
            del data[position:]
    return bytes(data)


def _image_or_refusal(data: bytes, name: str) -> None:
    try:
        image = load_image(io.BytesIO(data), name=name)
    except ImageLoadError as error:
        assert str(error).startswith(f"{name}: ") and "\n" not in str(error)
        return
    assert image.mode == "RGB" and min(image.size) >= 8


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_load_image_on_random_bytes(data):
    _image_or_refusal(data, "random.bin")


@pytest.mark.parametrize("format", list(SEEDS))
@FUZZ
@given(data=st.data())
def test_fuzz_load_image_on_mutated_images(format, data):
    _image_or_refusal(data.draw(mutated(SEEDS[format], head=128)), f"mutated.{format}")


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> dict[str, bytes]:
    """A tiny model's checkpoint as safetensors, as an exported .pt, and a trainer state."""
    from core.checkpoint import save_trainer_state

    folder = tmp_path_factory.mktemp("fuzz-checkpoints")
    torch.manual_seed(0)
    model = build_model("mesonet").eval()
    header = {"method": "teacher", "model": {"type": "resnet", "arch": "mesonet"}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "metrics": {"val_accuracy": 0.5}}
    save_checkpoint(folder / "model.safetensors", model, header)
    save_pt(folder / "model.pt", model, header)
    optimizer = torch.optim.Adam(model.parameters())
    save_trainer_state(folder / "state.pt", {"epoch": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict()})
    return {name: (folder / name).read_bytes() for name in ("model.safetensors", "model.pt", "state.pt")}


def _model_or_refusal(path) -> None:
    try:
        header = read_header(path)
        assert isinstance(header, dict)
        model = core.load_model(path)
    except CheckpointError as error:
        assert "\n" not in str(error)
        return
    assert not model.training and callable(model.preprocess)


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt"])
@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_loader(checkpoint_bytes, tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data.draw(mutated(checkpoint_bytes[name], head=1024)))
    _model_or_refusal(path)


@FUZZ
@given(data=st.data())
def test_fuzz_trainer_state_loader(checkpoint_bytes, tmp_path, data):
    path = tmp_path / "state.pt"
    path.write_bytes(data.draw(mutated(checkpoint_bytes["state.pt"], head=1024)))
    try:
        state = load_trainer_state(path)
    except CheckpointError:
        return
    assert isinstance(state, dict)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_checkpoint_loader_on_random_bytes(tmp_path, data):
    path = tmp_path / "random.safetensors"
    path.write_bytes(data)
    _model_or_refusal(path)
