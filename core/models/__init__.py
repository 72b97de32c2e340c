"""Model architectures. ``build_from_spec`` rebuilds any model a checkpoint header names."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from core.models.resnet import ARCHITECTURES, build_model

# spec["type"] -> builder(spec). Later model kinds (masked, compact students) register here.
MODEL_TYPES: dict[str, Callable[[dict], nn.Module]] = {
    "resnet": lambda spec: build_model(spec["arch"]),
}


def build_from_spec(spec: dict) -> nn.Module:
    """Rebuild the (untrained) module described by a checkpoint's ``model`` spec."""
    kind = spec.get("type")
    if kind not in MODEL_TYPES:
        raise ValueError(f"unknown model type {kind!r} in checkpoint; this version knows {sorted(MODEL_TYPES)}")
    return MODEL_TYPES[kind](spec)


__all__ = ["ARCHITECTURES", "MODEL_TYPES", "build_from_spec", "build_model"]
