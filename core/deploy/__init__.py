"""Deployment: checkpoints as ONNX models (fp32 and int8) that load, evaluate and serve like any checkpoint.

- :mod:`core.deploy.onnx`: the ONNX graph of a deployable network, with the checkpoint's JSON
  header in the model's ``metadata_props`` (key ``core``), and :class:`~core.deploy.onnx.OnnxModel`,
  an onnxruntime CPU session behind the interface of a loaded checkpoint (``core.load_model``
  returns one for a ``.onnx`` file).
- :mod:`core.deploy.quantize`: int8 post-training static quantisation (ONNX Runtime, QDQ,
  per-channel weights) calibrated on training images of the checkpoint's own dataset.
- :mod:`core.deploy.variants`: the ONNX fp32 / int8 versions of a checkpoint, exported once into
  the cache (keyed by the checkpoint's SHA-256), and their side-by-side comparison with PyTorch.

``python -m core export CKPT --format onnx|onnx-int8`` (:func:`core.deploy.export.export`) writes them.
"""
