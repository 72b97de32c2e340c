"""The frequency view of an image, computed on the fly in torch: block DCT or FFT log-magnitude.

Forgery traces (resampling, blending, double JPEG, GAN upsampling) show up as
periodic energy in the spectrum, which a spatial CNN reads only indirectly. The
frequency branch of the dual-branch teacher (:mod:`core.models.dual`) reads this
representation instead of the RGB pixels.

- :func:`block_dct`: the orthonormal 2-D DCT-II of every ``block x block`` tile of
  every channel, laid out in place (like a JPEG coefficient image), as two matrix
  products ``Y = A_H X A_W^T`` with ``A_n`` block-diagonal. Row ``k`` of a length-``m``
  block is ``sqrt(2/m) c_k cos(pi (2i + 1) k / (2m))``, ``c_0 = 1/sqrt(2)``, ``c_k = 1``
  otherwise, which is ``scipy.fft.dctn(tile, norm="ortho")`` on each tile. A side
  that is not a multiple of ``block`` ends in one shorter block with its own DCT.
  Matrix products keep it differentiable and exportable (no FFT op).
- :func:`frequency_representation`: ``r = log(1 + |coef|)`` of the block DCT (``dct``)
  or of ``fftshift(fft2(x))`` (``fft``, the centred whole-image spectrum per channel),
  then a fixed per-image standardisation ``(r - mean(r)) / (std(r) + 1e-6)`` over all
  channels and positions (no learned statistics). The output keeps the image's shape.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

KINDS = ("dct", "fft")
DCT_BLOCK = 8  # JPEG's block size
STANDARDISE_EPS = 1e-6  # a constant image (all-zero spectrum) stays all zeros


@functools.lru_cache(maxsize=32)
def dct_matrix(size: int, block: int = DCT_BLOCK) -> torch.Tensor:
    """``[size, size]`` block-diagonal orthonormal DCT-II matrix (float64, CPU): ``A x`` transforms each block of ``x``."""
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for start in range(0, size, block):
        length = min(block, size - start)
        position = torch.arange(length, dtype=torch.float64)
        # basis[k, i] = sqrt(2/m) c_k cos(pi (2i + 1) k / (2m))
        basis = torch.cos(math.pi * (2 * position[None, :] + 1) * position[:, None] / (2 * length)) * math.sqrt(2 / length)
        basis[0] /= math.sqrt(2)
        matrix[start:start + length, start:start + length] = basis
    return matrix


def block_dct(images: torch.Tensor, block: int = DCT_BLOCK) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of every ``block x block`` tile of ``images`` ``[..., H, W]``, in place of the tile."""
    height, width = images.shape[-2:]
    rows = dct_matrix(height, block).to(device=images.device, dtype=images.dtype)
    columns = dct_matrix(width, block).to(device=images.device, dtype=images.dtype)
    return rows @ images @ columns.T


def frequency_representation(images: torch.Tensor, kind: str = "dct") -> torch.Tensor:
    """Standardised log-magnitude spectrum of ``images`` ``[N, C, H, W]`` (same shape); see the module docstring."""
    if kind == "dct":
        magnitude = block_dct(images).abs()
    elif kind == "fft":
        magnitude = torch.fft.fftshift(torch.fft.fft2(images), dim=(-2, -1)).abs()
    else:
        raise ValueError(f"unknown frequency representation {kind!r}; choose from {KINDS}")
    log_magnitude = torch.log1p(magnitude)
    flat = log_magnitude.flatten(1)
    mean = flat.mean(dim=1).reshape(-1, 1, 1, 1)
    std = flat.std(dim=1, unbiased=False).reshape(-1, 1, 1, 1)
    return (log_magnitude - mean) / (std + STANDARDISE_EPS)


class FrequencyTransform(nn.Module):
    """:func:`frequency_representation` as a parameter-free layer (the frequency branch's input)."""

    def __init__(self, kind: str = "dct"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown frequency representation {kind!r}; choose from {KINDS}")
        self.kind = kind

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return frequency_representation(images, self.kind)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
