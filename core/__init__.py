"""Lightweight deepfake face detection: teachers, distilled and pruned students, analyses.

The public Python API (see docs/interfaces.md):

- :func:`load_model` rebuilds any checkpoint this project writes, in eval mode,
  with a single-logit output (logit > 0 means *fake*) and a ``preprocess``
  attribute: the exact transform (size, normalisation) the checkpoint expects.

Its functions import the library inside their bodies on purpose: ``import core`` stays light (the CLI, the
dashboard and the subprocesses of tests import it before they know what they need).
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def load_model(path: str | os.PathLike, device: str = "cpu", serve: bool = True, runtime: str | None = None,
               progress: bool = True):
    """Load a checkpoint file (or a run directory's best checkpoint) as an eval-mode callable, ready to serve.

    It takes ``[N, 3, S, S]`` preprocessed images and returns ``[N, 1]`` logits (logit > 0 means *fake*), and carries
    ``preprocess`` (PIL image -> normalised tensor), ``header`` (the checkpoint's JSON header: method, dataset,
    metrics, ...) and ``runtime`` (what answers: ``torch``, ``onnx``, ``openvino``, ...), with ``round_to`` and
    ``precision``.

    ``runtime`` (default ``$CORE_RUNTIME``, else ``auto``; as trained: ``torch``) is one of :data:`core.deploy.runtimes.RUNTIME_CHOICES`:
    ``auto`` serves the exact fp32 form (PyTorch, ONNX Runtime or OpenVINO, widths as trained or rounded to 8 or 16)
    measured fastest for this checkpoint on this machine, measured once and cached beside the checkpoint
    (``<stem>.serving.json``; ``progress`` shows the first measurement on stderr); ``torch`` is the network with each
    BatchNorm folded into the conv before it, channels_last weights and inputs, gradients off
    (:func:`core.models.loading.served`; logits equal the trained form's within float rounding); the others name
    one runtime (:func:`core.deploy.runtimes.load_runtime`). ``serve=False`` returns the network as trained, with its
    BatchNorms and gradients (fine-tuning, Grad-CAM, BatchNorm statistics). A ``.onnx`` file written by ``export
    --format onnx|onnx-int8`` loads as a :class:`core.deploy.onnx.OnnxModel`, an IR ``.xml`` written by ``export
    --format openvino`` as a :class:`core.deploy.openvino.OpenVinoModel`. A device other than the CPU runs PyTorch.
    """
    import core.deploy.onnx  # noqa: F401  (registers the ONNX runner)
    import core.deploy.openvino  # noqa: F401  (registers the OpenVINO IR runner)
    from core.checkpoint import is_graph, resolve_checkpoint
    from core.deploy.runtimes import AUTO, RUNTIME_CHOICES, default_runtime
    from core.deploy.runtimes import serve as serve_with
    from core.models.loading import load_model as load
    from core.models.loading import served

    runtime = runtime or (default_runtime() if serve else "torch")
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"runtime must be one of {RUNTIME_CHOICES}, got {runtime!r}")
    if is_graph(resolve_checkpoint(path)):  # an export runs as it is, in its own runtime (or OpenVINO when named)
        return serve_with(path, runtime, progress=progress)
    if device != "cpu" or (not serve and runtime in (AUTO, "torch")):
        if runtime not in (AUTO, "torch"):
            raise ValueError(f"runtime={runtime!r} runs on the CPU; device={device!r} runs PyTorch")
        model = load(path, device)
        model = served(model) if serve else model
        model.runtime, model.round_to, model.precision = "torch", 1, "fp32"
        return model
    return serve_with(path, runtime, progress=progress)


__all__ = ["__version__", "load_model"]
