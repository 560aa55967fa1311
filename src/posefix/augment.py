"""Appearance and shape augmentation of training crops (the crop's affine lives in :mod:`data`).

A PoseFix trained on a few persons memorizes their pixels and their poses. Colour jitter,
blur, grayscale and random erasing (a noise rectangle, standing in for an occluder) make
each pass over an image look different while the keypoints stay where they are
(:class:`Photometric`); a smooth random elastic warp bends the person, moving the image and
every keypoint with it, so that each pass also shows a slightly different pose
(:class:`Elastic`). Every draw comes from the sample's own generator, so samples remain a
pure function of ``(seed, epoch, index)``, and nothing is drawn when an augmentation is off
(the crops are then bit-identical to before).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Elastic", "Photometric"]

_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB luma weights


@dataclass(frozen=True)
class Photometric:
    """Random appearance changes of an RGB uint8 crop.

    ``color``: brightness, contrast and saturation each scaled by a factor drawn from
    ``[1 - color, 1 + color]``; ``blur_prob``: Gaussian blur (sigma 0.5-1.5 px);
    ``gray_prob``: grayscale; ``erase_prob``: one rectangle of 2-20 % of the crop filled
    with uniform noise.
    """

    color: float = 0.0
    blur_prob: float = 0.0
    gray_prob: float = 0.0
    erase_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.color < 1:
            raise ValueError(f"color must be in [0, 1), got {self.color}")
        for name in ("blur_prob", "gray_prob", "erase_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def enabled(self) -> bool:
        """Whether any option is on."""
        return bool(self.color or self.blur_prob or self.gray_prob or self.erase_prob)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented copy of ``image`` (H, W, 3) uint8 RGB."""
        if not self.enabled:
            return image
        img = image.astype(np.float32)
        if self.color:
            b, c, s = rng.uniform(1 - self.color, 1 + self.color, size=3)
            mean = float((img @ _GRAY).mean()) * b  # the brightened image's mean luma
            img = (img * b - mean) * c + mean
            g = (img @ _GRAY)[..., None]
            img = g + (img - g) * s
        if self.gray_prob and rng.random() < self.gray_prob:
            img = np.repeat((img @ _GRAY)[..., None], 3, axis=2)
        if self.blur_prob and rng.random() < self.blur_prob:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5)))
        if self.erase_prob and rng.random() < self.erase_prob:
            h, w = img.shape[:2]
            area = rng.uniform(0.02, 0.2) * h * w
            aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
            eh = int(min(h, round(np.sqrt(area * aspect))))
            ew = int(min(w, round(np.sqrt(area / aspect))))
            y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            img[y0:y0 + eh, x0:x0 + ew] = rng.uniform(0, 255, size=(eh, ew, 3))
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _bilinear(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``field`` (H, W, C) sampled bilinearly at ``pts`` (..., 2) ``x, y`` (clamped)."""
    h, w = field.shape[:2]
    x = np.clip(pts[..., 0], 0, w - 1)
    y = np.clip(pts[..., 1], 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@dataclass(frozen=True)
class Elastic:
    """A smooth random warp of a crop and its keypoints.

    Displacements drawn on a ``grid`` (rows, columns) of control points, normal with a
    standard deviation of ``strength`` times the crop's height, are interpolated bicubically
    over the crop, and scaled down where needed so that no displacement component changes
    by more than 0.4 px per px (a bend, never a fold); the image is resampled through them
    and keypoints are moved to where their pixels went (the warp's inverse, by fixed-point
    iteration, to 1e-3 px). Applied with probability ``prob``.
    """

    strength: float = 0.0
    prob: float = 1.0
    grid: tuple[int, int] = (4, 3)

    def __post_init__(self) -> None:
        if not 0 <= self.strength < 0.25:
            raise ValueError(f"strength must be in [0, 0.25), got {self.strength}")
        if not 0 <= self.prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")

    @property
    def enabled(self) -> bool:
        """Whether the warp can happen."""
        return bool(self.strength and self.prob)

    def field(self, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A random displacement field (H, W, 2), ``dx, dy`` in pixels, for a crop of
        ``size`` (height, width)."""
        h, w = size
        coarse = rng.standard_normal((*self.grid, 2)).astype(np.float32) * self.strength * h
        d = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        # Keep the warp a gentle bend: where a displacement changes by more than half a pixel
        # per pixel a fold-free inverse (and its fixed-point iteration) is not guaranteed.
        slope = max(float(np.abs(np.gradient(d[..., c], axis=a)).max())
                    for c in range(2) for a in range(2))
        return d * min(1.0, 0.4 / max(slope, 1e-12))

    def __call__(self, image: np.ndarray, points: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Warped copies of ``image`` (H, W, C) and ``points`` (..., 2) in its pixels."""
        if not self.enabled or rng.random() >= self.prob:
            return image, points
        h, w = image.shape[:2]
        d = self.field((h, w), rng)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        # out(p) = in(p + d(p)): a point q of the input lands where p + d(p) = q.
        warped = cv2.remap(image, xs + d[..., 0], ys + d[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
        q = np.asarray(points, dtype=np.float64)
        p = q.copy()
        for _ in range(30):  # a contraction: |d(a) - d(b)| <= 0.8 |a - b|
            p = q - _bilinear(d, p)
        return warped, p
