"""Boxes, crops and flips (paper section 3), vectorized over persons.

Conventions: boxes are ``x, y, w, h`` in pixels; a crop is described by a centre, a size
``(w, h)`` in the source image and a rotation in degrees; affine matrices are (N, 2, 3)
and map source pixels to crop pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from .spec import KeypointSpec

__all__ = [
    "apply_affine",
    "box_from_keypoints",
    "box_iou",
    "crop_transforms",
    "fix_aspect",
    "flip_keypoints",
    "invert_affine",
    "paired_box_iou",
    "sanitize_boxes",
    "warp_crop",
]


def box_from_keypoints(
    keypoints: np.ndarray, valid: np.ndarray | None = None, enlarge: float = 1.2,
    min_size: float = 20.0,
) -> np.ndarray:
    """Boxes around each person's valid keypoints, enlarged about their centre.

    As the PoseFix reference does for refinement inputs: the keypoints' extent times
    ``enlarge``, at least ``min_size`` pixels on each side. Persons with no valid keypoint
    get a ``min_size`` box at the origin. Returns (N, 4).
    """
    kp = np.asarray(keypoints, dtype=np.float64)[..., :2]
    if valid is None:
        valid = np.ones(kp.shape[:2], dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    big = np.where(valid[..., None], kp, np.inf)
    lo = big.min(1)
    hi = np.where(valid[..., None], kp, -np.inf).max(1)
    none = ~valid.any(1)
    lo[none] = 0.0
    hi[none] = 0.0
    center = (lo + hi) / 2
    size = np.maximum((hi - lo) * enlarge, min_size)
    return np.concatenate([center - size / 2, size], axis=1)


def sanitize_boxes(boxes: np.ndarray, width: np.ndarray | float, height: np.ndarray | float,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to their image as COCO loaders do; returns (boxes, keep mask)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(0.0, b[:, 0])
    y1 = np.maximum(0.0, b[:, 1])
    x2 = np.minimum(np.asarray(width, dtype=np.float64) - 1, x1 + np.maximum(0.0, b[:, 2] - 1))
    y2 = np.minimum(np.asarray(height, dtype=np.float64) - 1, y1 + np.maximum(0.0, b[:, 3] - 1))
    keep = (b[:, 2] * b[:, 3] > 0) & (x2 >= x1) & (y2 >= y1)
    out = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
    return out, keep


def fix_aspect(boxes: np.ndarray, aspect: float, padding: float = 1.25,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 2) and sizes (N, 2, as w, h) of boxes grown to ``aspect`` = w / h, padded."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    center = b[:, :2] + b[:, 2:] / 2
    w, h = b[:, 2].copy(), b[:, 3].copy()
    wide = w > aspect * h
    h = np.where(wide, w / aspect, h)
    w = np.where(wide, w, h * aspect)
    return center, np.stack([w, h], axis=1) * padding


def crop_transforms(
    centers: np.ndarray, sizes: np.ndarray, out_size: tuple[int, int],
    rotation: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Affine matrices (N, 2, 3) mapping each source region onto an ``out_size`` crop.

    ``out_size`` is (height, width); the region of size ``sizes`` (w, h) centred at
    ``centers`` is rotated by ``rotation`` degrees (counter-clockwise in the crop) and scaled
    so its width fills the crop width.
    """
    c = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    n = len(c)
    out_h, out_w = out_size
    rot = np.deg2rad(np.broadcast_to(np.asarray(rotation, dtype=np.float64), (n,)))
    scale = out_w / s[:, 0]
    cos, sin = np.cos(rot) * scale, np.sin(rot) * scale
    m = np.zeros((n, 2, 3))
    # Rotate about the centre and scale, then move the centre to the crop's centre.
    m[:, 0, 0], m[:, 0, 1] = cos, sin
    m[:, 1, 0], m[:, 1, 1] = -sin, cos
    m[:, :, 2] = np.array([out_w / 2, out_h / 2]) - np.einsum("nij,nj->ni", m[:, :, :2], c)
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of (N, 2, 3) affine matrices."""
    m = np.asarray(m, dtype=np.float64)
    a = m[:, :, :2]
    inv = np.linalg.inv(a)
    out = np.empty_like(m)
    out[:, :, :2] = inv
    out[:, :, 2] = -np.einsum("nij,nj->ni", inv, m[:, :, 2])
    return out


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply (N, 2, 3) matrices to points (N, K, 2); returns (N, K, 2)."""
    p = np.asarray(points, dtype=np.float64)[..., :2]
    m = np.asarray(m, dtype=np.float64)
    return np.einsum("nij,nkj->nki", m[:, :, :2], p) + m[:, None, :, 2]


def warp_crop(image: np.ndarray, m: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Crop one image (H, W, C) with one (2, 3) matrix to ``out_size`` (height, width)."""
    out_h, out_w = out_size
    return cv2.warpAffine(image, np.asarray(m, dtype=np.float64), (int(out_w), int(out_h)),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def paired_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``x, y, w, h`` paired elementwise (arrays broadcast, last axis 4)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    union = a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (A, B) of boxes ``x, y, w, h``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return paired_box_iou(a[:, None], b[None])


def flip_keypoints(keypoints: np.ndarray, width: float, spec: KeypointSpec) -> np.ndarray:
    """Mirror keypoints (..., K, C) in an image of ``width`` px and swap left/right."""
    kp = np.array(keypoints, dtype=np.float64, copy=True)
    kp[..., 0] = width - 1 - kp[..., 0]
    return kp[..., spec.flip_index, :]
