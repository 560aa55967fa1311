"""ImageNet normalisation of RGB crops: what every pretrained backbone expects to see.

Kept apart from the network so that the data pipeline can normalise without importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize", "normalize_array"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)  # RGB, images in [0, 1]
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)



def normalize(images: Tensor | np.ndarray, *, channels_last: bool = False) -> Tensor:
    """RGB images -> float32 tensors normalized with the ImageNet mean and std.

    Args:
        images: (B, 3, H, W) or (3, H, W) RGB; (..., H, W, 3) with ``channels_last``.
            ``uint8`` values are in [0, 255]; floating values are taken to be in [0, 1].
        channels_last: the channel axis is the last one (as decoded images are).

    Returns:
        float32 tensor of the same layout as the network input, (B, 3, H, W) or (3, H, W).
    """
    import torch  # torch-free at import: the ONNX path normalizes with normalize_array

    x = torch.as_tensor(images)
    if channels_last:
        x = x.movedim(-1, -3)
    if x.shape[-3] != 3:
        raise ValueError(f"expected 3 RGB channels, got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(shape)
    return (x - mean) / std


def normalize_array(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB crops -> (B, 3, H, W) float32 normalized like
    :func:`normalize`: each channel's 256 values go through the same float32 operations
    once, in a table, so the values are the same to the bit."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 RGB, got {x.shape} {x.dtype}")
    out = np.empty((x.shape[0], 3, *x.shape[1:3]), dtype=np.float32)
    for c in range(3):
        out[:, c] = _TABLE[c][x[..., c]]
    return out


def _table() -> np.ndarray:
    """(3, 256) float32: ``(v / 255 - mean) / std`` per channel, as :func:`normalize`."""
    v = np.arange(256, dtype=np.float32)[None] / np.float32(255.0)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None]
    return (v - mean) / std


_TABLE = _table()
