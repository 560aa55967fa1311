"""Keypoint similarity (KS), object keypoint similarity (OKS) and OKS-NMS.

Definitions follow the COCO keypoint evaluation: for a keypoint with OKS sigma s and a person
of area A, ``KS = exp(-d^2 / (2 * A * (2 s)^2))`` where d is the pixel distance.
All functions broadcast over leading dimensions and never loop per keypoint.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "keypoint_similarity",
    "ks_distance",
    "coco_oks",
    "oks",
    "oks_matrix",
    "oks_nms",
]

_EPS = np.spacing(1)


def _variances(sigmas: np.ndarray) -> np.ndarray:
    return (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2


def keypoint_similarity(
    pred: np.ndarray, gt: np.ndarray, area: np.ndarray | float, sigmas: np.ndarray
) -> np.ndarray:
    """Per-keypoint KS between ``pred`` (..., K, >=2) and ``gt`` (..., K, >=2).

    ``area`` broadcasts against the leading dimensions (one value per person).
    Returns an array of shape (..., K).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    d2 = ((pred[..., :2] - gt[..., :2]) ** 2).sum(-1)
    area = np.asarray(area, dtype=np.float64)[..., None]
    return np.exp(-d2 / _variances(sigmas) / (area + _EPS) / 2.0)


def ks_distance(k: float | np.ndarray, area: np.ndarray | float, sigmas: np.ndarray) -> np.ndarray:
    """Pixel distance at which KS equals ``k``, shape ``area.shape + (K,)``."""
    area = np.asarray(area, dtype=np.float64)[..., None]
    return np.sqrt(-2.0 * (area + _EPS) * _variances(sigmas) * np.log(k))


def oks(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    area: np.ndarray | float,
    sigmas: np.ndarray,
) -> np.ndarray:
    """OKS between paired persons: mean KS over the ground truth's labelled keypoints.

    ``visible`` is the (..., K) mask of labelled ground-truth keypoints. Persons with no
    labelled keypoint get OKS 0 (use :func:`coco_oks` for COCOeval's box fallback).
    """
    ks = keypoint_similarity(pred, gt, area, sigmas)
    vis = np.asarray(visible, dtype=bool)
    n = vis.sum(-1)
    return np.where(n > 0, (ks * vis).sum(-1) / np.maximum(n, 1), 0.0)


def coco_oks(
    det_xy: np.ndarray, gt_kp: np.ndarray, gt_box: np.ndarray, gt_area: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """OKS of paired detections and ground truths, bit for bit as ``COCOeval.computeOks``.

    Args:
        det_xy: (P, K, >=2) detected keypoints.
        gt_kp: (P, K, 3) ground-truth keypoints ``x, y, v``.
        gt_box: (P, 4) ground-truth boxes (used where no keypoint is labelled).
        gt_area: (P,) ground-truth areas.
        sigmas: (K,) OKS sigmas.

    Returns:
        (P,) OKS.
    """
    det_xy = np.asarray(det_xy, dtype=np.float64)
    gt_kp = np.asarray(gt_kp, dtype=np.float64)
    box = np.asarray(gt_box, dtype=np.float64)
    P, K = gt_kp.shape[:2]
    if P == 0:
        return np.zeros(0)
    vis = gt_kp[..., 2] > 0
    n_vis = vis.sum(-1)
    xd, yd = det_xy[..., 0], det_xy[..., 1]
    dx, dy = xd - gt_kp[..., 0], yd - gt_kp[..., 1]
    none = np.flatnonzero(n_vis == 0)
    if len(none):
        # Box fallback, computed as COCOeval does: (x - w, x + 2w), (y - h, y + 2h).
        b, x, y = box[none], xd[none], yd[none]
        x0, x1 = (b[:, 0] - b[:, 2])[:, None], (b[:, 0] + b[:, 2] * 2)[:, None]
        y0, y1 = (b[:, 1] - b[:, 3])[:, None], (b[:, 1] + b[:, 3] * 2)[:, None]
        dx[none] = np.maximum(0.0, x0 - x) + np.maximum(0.0, x - x1)
        dy[none] = np.maximum(0.0, y0 - y) + np.maximum(0.0, y - y1)
    variances = _variances(sigmas)
    e = (dx ** 2 + dy ** 2) / variances / (np.asarray(gt_area, dtype=np.float64)[:, None]
                                           + _EPS) / 2
    ks = np.exp(-e)
    out = np.empty(P)
    # Sum exactly the labelled values in keypoint order (as COCOeval's ``e[vg > 0]``), one
    # vectorized reduction per distinct labelled count: a row sum of n values is the same
    # floating-point sum as numpy's sum of the 1-D array of those n values.
    # Rows sorted by their count once; each count's rows are then one slice.
    order = np.argsort(n_vis, kind="stable")
    counts = n_vis[order]
    starts = np.flatnonzero(np.r_[True, counts[1:] != counts[:-1]])
    ends = np.r_[starts[1:], P]
    ks = ks[order]
    labelled = np.take_along_axis(ks, np.argsort(~vis[order], axis=1, kind="stable"), axis=1)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        n = int(counts[s])
        rows = order[s:e]
        if n == 0:
            out[rows] = ks[s:e].sum(-1) / K
        else:
            out[rows] = np.ascontiguousarray(labelled[s:e, :n]).sum(-1) / n
    return out



def oks_matrix(
    dets: np.ndarray,
    gts: np.ndarray,
    gt_visible: np.ndarray,
    gt_areas: np.ndarray,
    gt_boxes: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """COCOeval's OKS between every detection and every ground truth of one image.

    :func:`coco_oks` over all (detection, ground truth) pairs.

    Args:
        dets: (D, K, >=2) detected keypoints.
        gts: (G, K, >=2) ground-truth keypoints.
        gt_visible: (G, K) labelled mask (v > 0).
        gt_areas: (G,) areas.
        gt_boxes: (G, 4) boxes ``x, y, w, h``; used, as COCOeval does, for ground truths
            with no labelled keypoint (distance to the box enlarged to 3x its size).
        sigmas: (K,) OKS sigmas.

    Returns:
        (D, G) OKS matrix (COCOeval's ``ious`` transposed to detections first).
    """
    dets = np.asarray(dets, dtype=np.float64)[..., :2]
    gts = np.asarray(gts, dtype=np.float64)[..., :2]
    D, G = len(dets), len(gts)
    if D == 0 or G == 0:
        return np.zeros((D, G))
    gt_kp = np.concatenate([gts, np.asarray(gt_visible, dtype=np.float64)[..., None]], -1)
    pairs = coco_oks(np.repeat(dets, G, axis=0), np.tile(gt_kp, (D, 1, 1)),
                     np.tile(np.asarray(gt_boxes, dtype=np.float64), (D, 1)),
                     np.tile(np.asarray(gt_areas, dtype=np.float64), D), sigmas)
    return pairs.reshape(D, G)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: np.ndarray,
    threshold: float = 0.9,
    keypoint_scores: np.ndarray | None = None,
    min_keypoint_score: float | None = None,
) -> np.ndarray:
    """Greedy OKS non-maximum suppression of one image's poses.

    Keeps the best-scoring pose, drops every other pose whose OKS to it (with the mean of
    the two poses' areas, as the SimpleBaseline/PoseFix reference's ``oks_iou``) exceeds
    ``threshold``, and repeats. If ``keypoint_scores`` and
    ``min_keypoint_score`` are given, only the kept pose's keypoints scoring above it count
    in the OKS (the SimpleBaseline/PoseFix reference's ``in_vis_thre``, whose
    ``list(vg > t) and list(vd > t)`` is, in Python, the other pose's keypoints alone).

    Returns the indices of kept poses in descending score order.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)[..., :2]
    scores = np.asarray(scores, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if keypoint_scores is not None and min_keypoint_score is not None:
        valid = np.asarray(keypoint_scores) > min_keypoint_score
    else:
        valid = np.ones(keypoints.shape[:2], dtype=bool)
    # All pairwise OKS at once: row i over pose i's valid keypoints, the pair's mean area.
    d2 = ((keypoints[:, None] - keypoints[None]) ** 2).sum(-1)  # N, N, K
    ks = np.exp(-d2 / _variances(sigmas) / ((areas[:, None, None] + areas[None, :, None]) / 2
                                             + _EPS) / 2.0)
    m = valid[:, None, :]
    pair_oks = np.where(m.sum(-1) > 0, (ks * m).sum(-1) / np.maximum(m.sum(-1), 1), 0.0)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= pair_oks[i] > threshold
    return np.asarray(keep, dtype=np.int64)
