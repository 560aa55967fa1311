"""Heatmap rendering and decoding, batched in torch (paper sections 3 and 5).

Coordinate conventions (used everywhere in posefix):

* Input pixels: pixel ``(i, j)`` of a crop has its centre at ``x = j, y = i`` (so a
  horizontal flip maps ``x`` to ``W - 1 - x``, as :func:`posefix.geometry.flip_keypoints`).
  Input-pose heatmaps are rendered on this grid at full input resolution.
* Heatmap cells: cell ``(i, j)`` of an output map has its centre at ``x = j, y = i``.
  The output map has ``stride`` input pixels per cell and is centre-aligned with the input:
  ``pixel = (cell + 0.5) * stride - 0.5`` (:func:`heatmap_to_pixels`) and its inverse
  ``cell = (pixel + 0.5) / stride - 0.5`` (:func:`pixels_to_heatmap`). With this mapping a
  flip of the crop is a flip of the heatmap (``w - 1 - x``), so flip testing needs no shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "bilinear_onehot",
    "default_input_sigma",
    "heatmap_confidence",
    "heatmap_to_pixels",
    "local_soft_argmax",
    "log_gaussian_prior",
    "pixels_to_heatmap",
    "render_gaussians",
    "soft_argmax",
]

Stride = float | Sequence[float]


def render_gaussians(points: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """Unnormalized Gaussians (peak 1) at each keypoint: the coarse input pose of PoseFix.

    Args:
        points: (B, K, 3) ``x, y, valid`` in input pixels; a keypoint with ``valid == 0``
            renders as an all-zero map (``valid`` is used as a 0/1 mask, not a weight).
        height, width: size of the maps in pixels.
        sigma: standard deviation in pixels.

    Returns:
        (B, K, height, width) float tensor on ``points``' device.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, K, 3), got {tuple(points.shape)}")
    pts = points if points.is_floating_point() else points.float()
    xs = torch.arange(width, device=pts.device, dtype=pts.dtype)
    ys = torch.arange(height, device=pts.device, dtype=pts.dtype)
    inv = -0.5 / float(sigma) ** 2
    # The 2-D Gaussian is separable: exp(a + b) = exp(a) * exp(b), an outer product per map.
    gx = torch.exp((xs - pts[..., 0:1]) ** 2 * inv)  # (B, K, W)
    gy = torch.exp((ys - pts[..., 1:2]) ** 2 * inv)  # (B, K, H)
    on = (pts[..., 2:3] > 0).to(pts.dtype)
    return (gy * on).unsqueeze(-1) * gx.unsqueeze(-2)


def log_gaussian_prior(points: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """Log of a Gaussian prior around each keypoint, with a floor: logits that decode to it.

    ``log(exp(-d^2 / (2 sigma^2)) + exp(-floor))`` with ``floor = log(h * w) + 10``, so that
    a softmax of these logits is the sampled Gaussian itself (its soft-argmax is the keypoint
    to within 1e-3 cells for ``sigma >= 1`` cell, away from the map's border) while the far
    cells keep a small, non-vanishing probability that evidence can raise. A keypoint with
    ``valid == 0`` gives an all-zero (flat) map.

    Args:
        points: (B, K, 3) ``x, y, valid`` in cells of the map.
        height, width: size of the maps.
        sigma: standard deviation in cells.

    Returns:
        (B, K, height, width) float tensor, 0 at the keypoint and ``-floor`` far from it.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (B, K, 3), got {tuple(points.shape)}")
    pts = points if points.is_floating_point() else points.float()
    gx, gy = _grids(height, width, pts)
    inv = -0.5 / float(sigma) ** 2
    q = ((gy - pts[..., 1:2]) ** 2 * inv).unsqueeze(-1) + ((gx - pts[..., 0:1]) ** 2 * inv
                                                           ).unsqueeze(-2)
    floor = math.log(height * width) + 10.0
    on = (pts[..., 2:3] > 0).to(pts.dtype).unsqueeze(-1)
    # logaddexp(q, -floor), written out so that it exports to ONNX.
    prior = torch.clamp_min(q, -floor) + torch.log1p(torch.exp(-(q + floor).abs()))
    return prior * on


def default_input_sigma(input_size: Sequence[int], sigma_at_256x192: float = 7.0) -> float:
    """Sigma in pixels of the input-pose Gaussians for a crop of ``input_size`` (h, w).

    The reference implementation uses 7 px at 256x192 and 9 px at 384x288; this is the
    affine function of the crop height through those two settings, scaled so that
    ``sigma_at_256x192`` is returned at height 256: ``sigma * (h + 192) / 448``.
    """
    h = float(input_size[0])
    if h <= 0:
        raise ValueError(f"input height must be positive, got {input_size}")
    return float(sigma_at_256x192) * (h + 192.0) / 448.0


def _grids(h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.arange(w, device=like.device, dtype=like.dtype),
            torch.arange(h, device=like.device, dtype=like.dtype))


def soft_argmax(logits: Tensor) -> Tensor:
    """Integral regression: expected cell position under the softmax of each whole map.

    Args:
        logits: (B, K, h, w) heatmap logits.

    Returns:
        (B, K, 2) ``x, y`` in heatmap cells (sub-cell precision).
    """
    b, k, h, w = logits.shape
    prob = torch.softmax(logits.reshape(b, k, h * w).float(), dim=-1).reshape(b, k, h, w)
    gx, gy = _grids(h, w, prob)
    x = (prob.sum(dim=2) * gx).sum(-1)
    y = (prob.sum(dim=3) * gy).sum(-1)
    return torch.stack([x, y], dim=-1)


def local_soft_argmax(logits: Tensor, radius: int) -> Tensor:
    """Soft-argmax within ``radius`` cells (Chebyshev) of each map's most likely cell.

    The global soft-argmax is the mean of the heatmap, so a second mode (a keypoint that
    may be elsewhere) pulls it off both; this decodes the main mode only, to sub-cell
    precision. A Gaussian of sigma ``s`` cells is decoded without bias (< 0.003 cells) from
    ``radius >= 3 * s``.

    Args:
        logits: (B, K, h, w) heatmap logits.
        radius: half-width of the window in cells (>= 1).

    Returns:
        (B, K, 2) ``x, y`` in heatmap cells.
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    b, k, h, w = logits.shape
    flat = logits.reshape(b, k, h * w).float()
    best = flat.argmax(dim=-1, keepdim=True)  # (B, K, 1)
    gx, gy = _grids(h, w, flat)
    bx, by = (best % w).to(flat.dtype), torch.div(best, w, rounding_mode="floor").to(flat.dtype)
    inside = (((gy.view(1, 1, h, 1) - by.unsqueeze(-1)).abs() <= radius)
              & ((gx.view(1, 1, 1, w) - bx.unsqueeze(-1)).abs() <= radius))
    masked = torch.where(inside.reshape(b, k, h * w), flat, torch.full_like(flat, -1e4))
    return soft_argmax(masked.reshape(b, k, h, w))


def bilinear_onehot(coords: Tensor, h: int, w: int) -> Tensor:
    """Target distribution with unit mass spread bilinearly over the 4 cells around ``coords``.

    Coordinates are clamped into the map (``[0, w-1] x [0, h-1]``) first, so every row sums
    to 1 and its expected cell position equals the clamped coordinate.

    Args:
        coords: (B, K, 2) ``x, y`` in heatmap cells.
        h, w: map size.

    Returns:
        (B, K, h * w) probabilities, row-major (index ``y * w + x``).
    """
    c = coords.float()
    gx, gy = _grids(h, w, c)
    x = c[..., 0:1].clamp(0, w - 1)
    y = c[..., 1:2].clamp(0, h - 1)
    # The bilinear weights along one axis are the "hat" function max(0, 1 - |cell - x|).
    wx = (1 - (gx - x).abs()).clamp_min(0)  # (B, K, w)
    wy = (1 - (gy - y).abs()).clamp_min(0)  # (B, K, h)
    return (wy.unsqueeze(-1) * wx.unsqueeze(-2)).flatten(-2)


def heatmap_confidence(logits: Tensor) -> Tensor:
    """Confidence of each keypoint: softmax mass in the 3x3 cells around its soft-argmax.

    Near 1 for a sharp, unimodal heatmap (the bilinear target puts all its mass in 2x2
    cells); ``9 / (h * w)`` for a flat one. Used to rescore refined poses.

    Args:
        logits: (B, K, h, w).

    Returns:
        (B, K) in [0, 1].
    """
    b, k, h, w = logits.shape
    prob = torch.softmax(logits.reshape(b, k, h * w).float(), dim=-1).reshape(b, k, h, w)
    gx, gy = _grids(h, w, prob)
    x = (prob.sum(dim=2) * gx).sum(-1, keepdim=True)
    y = (prob.sum(dim=3) * gy).sum(-1, keepdim=True)
    mx = ((gx - torch.round(x)).abs() <= 1).to(prob.dtype)  # (B, K, w)
    my = ((gy - torch.round(y)).abs() <= 1).to(prob.dtype)  # (B, K, h)
    return (prob * my.unsqueeze(-1) * mx.unsqueeze(-2)).sum(dim=(-2, -1))


def _stride_xy(stride: Stride, like: Tensor) -> Tensor:
    s = torch.as_tensor(stride, dtype=like.dtype, device=like.device)
    if s.dim() == 0:
        return s
    if s.shape != (2,):
        raise ValueError(f"stride must be a number or (sx, sy), got {stride}")
    return s


def pixels_to_heatmap(coords: Tensor, stride: Stride) -> Tensor:
    """Input pixels -> heatmap cells: ``cell = (pixel + 0.5) / stride - 0.5``.

    ``coords`` is (..., 2) ``x, y``; ``stride`` a number or ``(sx, sy)``.
    """
    c = coords if coords.is_floating_point() else coords.float()
    return (c + 0.5) / _stride_xy(stride, c) - 0.5


def heatmap_to_pixels(coords: Tensor, stride: Stride) -> Tensor:
    """Heatmap cells -> input pixels: ``pixel = (cell + 0.5) * stride - 0.5``.

    The inverse of :func:`pixels_to_heatmap`.
    """
    c = coords if coords.is_floating_point() else coords.float()
    return (c + 0.5) * _stride_xy(stride, c) - 0.5

