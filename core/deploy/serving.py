"""A checkpoint served through ONNX Runtime: ``core.load_model(path, runtime="onnx")``, ``predict --runtime onnx``.

The first call exports the checkpoint's deployable network (a masked student's compact form, as ``export`` does) to
``<cache>/serving/<name>-<sha256[:16]>.onnx``, keyed by the checkpoint's content, so a changed checkpoint is exported
again and an unchanged one never is. When the checkpoint has an out-of-distribution model
(:mod:`core.evaluation.ood`), the graph also outputs the statistics of its stages, and the model is copied beside
the export as a sidecar: one run of the graph gives the verdict and how far the input is from the training data.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.checkpoint import is_onnx, resolve_checkpoint
from core.deploy.onnx import OnnxModel, deployed_header, load_onnx, write_onnx
from core.io import cache_dir


def serving_path(checkpoint: str | os.PathLike) -> Path:
    """Where the serving export of ``checkpoint`` is cached (its name and content hash)."""
    from core.evaluation.evaluate import file_digest

    path = resolve_checkpoint(checkpoint)
    return cache_dir() / "serving" / f"{path.name.removesuffix(path.suffix)}-{file_digest(path)[:16]}.onnx"


def serving_export(checkpoint: str | os.PathLike) -> Path:
    """The cached ONNX export of ``checkpoint`` for serving (written on first use, atomically)."""
    import torch

    from core.checkpoint import sidecar_path
    from core.evaluation.evaluate import file_digest
    from core.evaluation.ood import load_ood, save_sidecar
    from core.models.loading import load_model
    from core.pruning.surgery import compact_of

    path = resolve_checkpoint(checkpoint)
    out = serving_path(path)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    compact, header = compact_of(load_model(path))
    ood = load_ood(path)
    deploy = {"format": "onnx", "precision": "fp32", "source": str(path), "source_sha256": file_digest(path),
              "exporter": f"torch.onnx dynamo (torch {torch.__version__})", "serving": True,
              "statistics": ood.stages if ood is not None else []}
    if ood is not None:
        save_sidecar(ood, sidecar_path(out))  # first: the export's existence means both are there
    write_onnx(compact, {**deployed_header(header), "deploy": deploy}, header["image_size"], out,
               statistics=ood.stages if ood is not None else None)
    return out


def load_serving(checkpoint: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """``checkpoint`` run by ONNX Runtime (an ``.onnx`` file as it is; anything else through its cached export)."""
    path = resolve_checkpoint(checkpoint)
    return load_onnx(path if is_onnx(path) else serving_export(path), threads)
