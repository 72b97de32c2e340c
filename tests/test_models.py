"""Teacher construction: single logit, ImageNet/local-weights starts, the paper's fine-tune mode."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision import models as tv

from core.models import build_model
from core.models.registry import IMAGENET_WEIGHTS
from core.models.resnet import set_trainable
from core.training.distributed import default_device


def test_single_logit_head():
    model = build_model("resnet-tiny").eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_local_weights_file_loads_everything_but_the_head(tmp_path):
    torch.manual_seed(0)
    imagenet_like = tv.resnet18(num_classes=1000)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet_like.state_dict(), path)
    model = build_model("resnet18", str(path))
    torch.testing.assert_close(model.layer4[1].conv2.weight, imagenet_like.layer4[1].conv2.weight)
    assert model.fc.out_features == 1


def test_weights_for_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(tv.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="do not fit resnet50"):
        build_model("resnet50", str(path))
    with pytest.raises(FileNotFoundError):
        build_model("resnet18", str(tmp_path / "missing.pth"))


def test_offline_imagenet_gives_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(IMAGENET_WEIGHTS["resnet50"]), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="offline.*--pretrained PATH"):
        build_model("resnet50", "imagenet")


def test_layer4_fine_tune_freezes_the_rest():
    model = build_model("resnet-tiny")
    set_trainable(model, "layer4")
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    set_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())


def test_device_override(monkeypatch):
    """A device named in the call beats $CORE_DEVICE, which beats the automatic cuda -> mps -> cpu choice; "auto" (the
    config's default) names none."""
    monkeypatch.setenv("CORE_DEVICE", "cuda:1")  # devices this machine does not pick by itself: the override is what shows
    for requested in (None, "auto"):
        assert default_device(requested) == torch.device("cuda", 1)
    assert default_device("meta") == torch.device("meta")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    for requested, environment in ((None, "auto"), ("auto", "auto"), (None, None), ("auto", None)):
        if environment is None:
            monkeypatch.delenv("CORE_DEVICE", raising=False)
        else:
            monkeypatch.setenv("CORE_DEVICE", environment)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert default_device(requested) == torch.device("cuda"), (requested, environment)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert default_device(requested) == torch.device("mps"), (requested, environment)


def test_efficientnet_starts_from_b0_imagenet_weights_lite0_without_squeeze_excitation(tmp_path):
    torch.manual_seed(0)
    imagenet_like = tv.efficientnet_b0(num_classes=1000)  # torchvision's file has this layout
    path = tmp_path / "efficientnet_b0_rwightman-7f5810bc.pth"
    torch.save(imagenet_like.state_dict(), path)
    reference = imagenet_like.state_dict()
    for arch in ("efficientnet_b0", "efficientnet_lite0"):
        model = build_model(arch, str(path))
        state = model.state_dict()
        body = [k for k in state if not k.startswith("classifier.")]
        assert body and all(torch.equal(state[k], reference[k]) for k in body)
        assert model.classifier[1].out_features == 1
    with pytest.raises(ValueError, match="do not fit efficientnet_b0"):  # a ResNet file is refused
        torch.save(tv.resnet18().state_dict(), tmp_path / "r18.pth")
        build_model("efficientnet_b0", str(tmp_path / "r18.pth"))


def test_offline_efficientnet_lite0_points_at_the_b0_weights(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(type(IMAGENET_WEIGHTS["efficientnet_b0"]), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="efficientnet_b0_rwightman.*--pretrained PATH"):
        build_model("efficientnet_lite0", "imagenet")
