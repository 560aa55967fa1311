"""Drawing poses: ground truth, input and refined keypoints, side by side, to PNG files.

Any keypoint spec is drawn with its own skeleton. Keypoints and limbs of the person's left
side are blue, of the right side orange, and the rest (nose, neck, the limb between the
shoulders...) green; the side of a keypoint comes from its name (``left_*`` / ``right_*``,
``l_*`` / ``r_*``) where the spec's flip pairs name it, else from the order of the pair.

:func:`render_panels` draws an image's poses side by side, one labelled panel per set
(:func:`draw_panel` draws one, unlabelled, e.g. for ``RefinedPoses.plot``);
``posefix visualize`` (:mod:`posefix.commands.visualize`) writes them to files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .spec import KeypointSpec, load_spec

__all__ = [
    "CENTER_COLOR",
    "EXAMPLE_MAX_SIDE",
    "EXAMPLE_MIN_SIDE",
    "LEFT_COLOR",
    "MOVE_COLOR",
    "REMOVED_COLOR",
    "RIGHT_COLOR",
    "SIDE_COLORS",
    "Panel",
    "draw_moves",
    "draw_panel",
    "draw_pose",
    "keypoint_sides",
    "label_panel",
    "render_panels",
]

LEFT_COLOR: tuple[int, int, int] = (40, 140, 255)  # RGB
RIGHT_COLOR: tuple[int, int, int] = (255, 120, 20)
CENTER_COLOR: tuple[int, int, int] = (40, 200, 80)
MOVE_COLOR: tuple[int, int, int] = (235, 30, 235)  # a moved keypoint's path (magenta)
REMOVED_COLOR: tuple[int, int, int] = (170, 170, 170)  # a removed pose (grey)
#: The example pictures of ``posefix demo`` and of a refine report: each panel's longer
#: side, small images (LSP's are ~60x170 px) enlarged so that a change shows.
EXAMPLE_MIN_SIDE = 480
EXAMPLE_MAX_SIDE = 560
_LABEL_HEIGHT = 28
_GAP = 6


def _side_of_name(name: str) -> int:
    n = name.lower()
    if n.startswith(("left", "l_")) or "_left" in n:
        return -1
    if n.startswith(("right", "r_")) or "_right" in n:
        return 1
    return 0


def keypoint_sides(spec: KeypointSpec) -> np.ndarray:
    """(K,) side of each keypoint: -1 left, +1 right, 0 neither (not in a flip pair)."""
    side = np.zeros(spec.num_keypoints, dtype=np.int64)
    for i, j in spec.flip_pairs:
        si, sj = _side_of_name(spec.keypoints[i]), _side_of_name(spec.keypoints[j])
        if si == 0 and sj == 0 or si == sj:
            si, sj = -1, 1  # names do not tell: the pair's first keypoint is the left one
        elif si == 0:
            si = -sj
        elif sj == 0:
            sj = -si
        side[i], side[j] = si, sj
    return side


#: The colours of a pose's left side, right side and centre (RGB).
SIDE_COLORS: tuple[tuple[int, int, int], ...] = (LEFT_COLOR, RIGHT_COLOR, CENTER_COLOR)


def _side_color(side: int | np.integer, colors: Sequence[tuple[int, int, int]],
                ) -> tuple[int, int, int]:
    left, right, center = colors
    return left if side < 0 else right if side > 0 else center


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    spec: KeypointSpec | str,
    *,
    min_score: float = 0.0,
    colors: Sequence[tuple[int, int, int]] = SIDE_COLORS,
    thickness: int | None = None,
    radius: int | None = None,
    scale: float = 1.0,
    label: str | None = None,
) -> np.ndarray:
    """Draw one or more poses on a copy of an image.

    Args:
        image: (H, W, 3) uint8 RGB.
        keypoints: (K, 3) or (N, K, 3) ``x, y, score`` (or ``v``) in image pixels;
            keypoints scoring ``<= min_score`` or at ``(0, 0)`` are not drawn, nor their
            limbs.
        spec: keypoint layout (its skeleton is drawn).
        min_score: keypoint score threshold.
        colors: RGB colours of the left side, the right side and the centre
            (:data:`SIDE_COLORS`).
        thickness, radius: limb width and joint radius in pixels (default: from image size).
        scale: multiply coordinates by this first (to draw on a resized image).
        label: text drawn above each pose (e.g. its score), or None.

    Returns:
        The drawn image (H, W, 3) uint8.
    """
    spec = load_spec(spec)
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, spec.num_keypoints, 3)
    side = max(out.shape[:2])
    thickness = thickness or max(2, round(side / 320))
    radius = radius or max(2, round(side / 200))
    sides = keypoint_sides(spec)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    for kp in kps:
        xy = kp[:, :2] * scale
        ok = (kp[:, 2] > min_score) & ~np.all(kp[:, :2] == 0, axis=1) & np.all(
            np.isfinite(xy), axis=1)
        pts = np.rint(xy * (1 << shift)).astype(np.int64)
        pts = np.clip(pts, -(1 << 28), 1 << 28)
        for i, j in spec.skeleton:
            if ok[i] and ok[j]:
                s = sides[i] if sides[i] == sides[j] else 0
                color = _side_color(s, colors)
                cv2.line(out, (int(pts[i, 0]), int(pts[i, 1])), (int(pts[j, 0]), int(pts[j, 1])),
                         color, thickness, cv2.LINE_AA, shift)
        for k in np.flatnonzero(ok):
            color = _side_color(sides[k], colors)
            center = (int(pts[k, 0]), int(pts[k, 1]))
            cv2.circle(out, center, (radius + 1) << shift, (0, 0, 0), -1, cv2.LINE_AA, shift)
            cv2.circle(out, center, radius << shift, color, -1, cv2.LINE_AA, shift)
        if label is not None and ok.any():
            x0, y0 = xy[ok, 0].min(), xy[ok, 1].min()
            _text(out, label, (int(x0), max(12, int(y0) - radius - 4)), 0.4, (255, 255, 255))
    return out


def _text(img: np.ndarray, text: str, org: tuple[int, int], size: float,
          color: tuple[int, int, int]) -> None:
    """Text with a dark outline, readable on any background.

    The outline is the same thin text shifted by one pixel each way: thicker Hershey text
    advances further per glyph, so a thick outline drifts right of the text it outlines.
    """
    x, y = org
    for dx, dy in ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)):
        cv2.putText(img, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 1,
                    cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, color, 1, cv2.LINE_AA)


def label_panel(panel: np.ndarray, label: str) -> np.ndarray:
    """A panel with a dark title bar holding ``label`` above it."""
    bar = np.full((_LABEL_HEIGHT, panel.shape[1], 3), 32, dtype=np.uint8)
    _text(bar, label, (6, _LABEL_HEIGHT - 9), 0.55, (255, 255, 255))
    return np.concatenate([bar, panel], axis=0)


@dataclass
class Panel:
    """One panel of :func:`render_panels`.

    Attributes:
        label: the panel's title (the pose count is appended).
        keypoints: (N, K, 3) poses drawn.
        scores: (N,) person scores written above each pose, or None.
        origins: (N, K, 2) where each keypoint was before it moved (NaN: it did not move);
            a magenta line is drawn from there to the keypoint, with a ring at the origin.
        removed: (M, K, 3) poses drawn grey and labelled "removed (OKS-NMS)" below.
    """

    label: str
    keypoints: np.ndarray
    scores: np.ndarray | None = None
    origins: np.ndarray | None = None
    removed: np.ndarray | None = None


def draw_moves(image: np.ndarray, keypoints: np.ndarray, origins: np.ndarray, *,
               scale: float = 1.0, color: tuple[int, int, int] = MOVE_COLOR) -> np.ndarray:
    """Mark moved keypoints on a copy of an image: a line from each origin to its keypoint
    and a ring at the origin.

    Args:
        image: (H, W, 3) uint8 RGB.
        keypoints: (..., K, 2+) where the keypoints are now, in image pixels.
        origins: (..., K, 2) where they were (NaN: not moved, nothing drawn).
        scale: multiply coordinates by this first (to draw on a resized image).
        color: RGB of the lines and rings (outlined in black).

    Returns:
        The drawn image.
    """
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    to = np.asarray(keypoints, dtype=np.float64)[..., :2].reshape(-1, 2) * scale
    fr = np.asarray(origins, dtype=np.float64)[..., :2].reshape(-1, 2) * scale
    ok = np.all(np.isfinite(fr), axis=1) & np.all(np.isfinite(to), axis=1)
    side = max(out.shape[:2])
    width = max(1, round(side / 400))
    ring = max(3, round(side / 110))
    shift = 4
    a = np.clip(np.rint(fr[ok] * (1 << shift)), -(1 << 28), 1 << 28).astype(np.int64)
    b = np.clip(np.rint(to[ok] * (1 << shift)), -(1 << 28), 1 << 28).astype(np.int64)
    for pass_color, extra in (((0, 0, 0), 2), (color, 0)):
        for (x0, y0), (x1, y1) in zip(a.tolist(), b.tolist(), strict=True):
            cv2.line(out, (x0, y0), (x1, y1), pass_color, width + extra, cv2.LINE_AA, shift)
            cv2.circle(out, (x0, y0), ring << shift, pass_color, width + extra, cv2.LINE_AA,
                       shift)
    return out


def _as_panel(p: Panel | tuple[str, np.ndarray, np.ndarray | None]) -> Panel:
    return p if isinstance(p, Panel) else Panel(p[0], p[1], p[2])


def _title_bar(width: int, lines: Sequence[str]) -> np.ndarray:
    """A white bar holding dark lines of text, as wide as the canvas."""
    line_h = 18
    bar = np.full((line_h * len(lines) + 8, width, 3), 255, dtype=np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (6, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (20, 20, 20), 1, cv2.LINE_AA)
    return bar


def draw_panel(image: np.ndarray, panel: Panel, spec: KeypointSpec | str, *,
               scale: float = 1.0, keypoint_min_score: float = 0.0) -> np.ndarray:
    """One panel's poses drawn on a copy of an image (no title bar): the removed poses grey
    and labelled, the moved keypoints' marks (:func:`draw_moves`), then each pose with its
    score above it.

    Args:
        image: (H, W, 3) uint8 RGB, already resized by ``scale``.
        panel: what to draw (:class:`Panel`; its label is not drawn).
        spec: keypoint layout.
        scale: multiply coordinates by this first (to draw on a resized image).
        keypoint_min_score: keypoint score threshold (see :func:`draw_pose`).

    Returns:
        The drawn image, as large as ``image``.
    """
    spec = load_spec(spec)
    p = panel
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    kps = np.asarray(p.keypoints, dtype=np.float64).reshape(-1, spec.num_keypoints, 3)
    if p.removed is not None and len(p.removed):
        grey = REMOVED_COLOR
        out = draw_pose(out, p.removed, spec, min_score=keypoint_min_score, scale=scale,
                        colors=(grey, grey, grey))
        for kp in np.asarray(p.removed, dtype=np.float64).reshape(-1, spec.num_keypoints, 3):
            ok = (kp[:, 2] > keypoint_min_score) & ~np.all(kp[:, :2] == 0, axis=1)
            if ok.any():  # below the pose: a duplicate's label above it would collide
                x, y = kp[ok, 0].min() * scale, kp[ok, 1].max() * scale
                y = min(int(y) + 16, out.shape[0] - 4)
                _text(out, "removed (OKS-NMS)", (max(2, int(x)), y), 0.45, grey)
    if p.origins is not None:
        out = draw_moves(out, kps, p.origins, scale=scale)
    for n in range(len(kps)):
        text = None if p.scores is None else f"{float(p.scores[n]):.2f}"
        out = draw_pose(out, kps[n], spec, min_score=keypoint_min_score, scale=scale,
                        label=text)
    return out


def render_panels(
    image: np.ndarray,
    poses: Sequence[Panel | tuple[str, np.ndarray, np.ndarray | None]],
    spec: KeypointSpec | str,
    *,
    keypoint_min_score: float = 0.0,
    max_side: int | None = 640,
    min_side: int | None = None,
    title: Sequence[str] = (),
) -> np.ndarray:
    """Side-by-side labelled panels of one image, one per set of poses.

    Args:
        image: (H, W, 3) uint8 RGB.
        poses: a :class:`Panel` or ``(label, keypoints (N, K, 3), person scores (N,) or
            None)`` per panel; person scores, when given, are written above each pose.
        spec: keypoint layout.
        keypoint_min_score: keypoint score threshold (see :func:`draw_pose`).
        max_side: shrink each panel so its longer side is at most this (None: full size).
        min_side: enlarge a smaller image so its longer side is this (None: never).
        title: lines of text written above the panels.

    Returns:
        (H', W', 3) uint8 RGB canvas.
    """
    spec = load_spec(spec)
    h, w = image.shape[:2]
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
    elif min_side and max(h, w) < min_side:
        scale = min_side / max(h, w)
    base = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    panels = []
    for p in map(_as_panel, poses):
        count = np.size(p.keypoints) // (3 * spec.num_keypoints)
        panels.append(label_panel(draw_panel(base, p, spec, scale=scale,
                                             keypoint_min_score=keypoint_min_score),
                                  f"{p.label} ({count})"))
    if not panels:
        panels.append(label_panel(base.copy(), "image"))
    gap = np.full((panels[0].shape[0], _GAP, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, p in enumerate(panels):
        parts += [gap, p] if i else [p]
    canvas = np.concatenate(parts, axis=1)
    if title:
        canvas = np.concatenate([_title_bar(canvas.shape[1], title), canvas], axis=0)
    return canvas
