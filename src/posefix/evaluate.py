"""COCO keypoint AP/AR: a vectorized re-implementation of pycocotools' ``COCOeval``.

:func:`evaluate` gives the ten numbers of ``COCOeval(..., 'keypoints').summarize()``
(AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl) with the spec's OKS sigmas, and is
meant to agree with pycocotools exactly. It reproduces COCOeval's rules and quirks:

* OKS as ``computeOks``: mean keypoint similarity over the ground truth's labelled keypoints,
  the same floating-point operations in the same order; a ground truth with no labelled
  keypoint is compared through its box enlarged to 3x (distance to the box, zero inside).
* only the ``maxDets`` = 20 best-scoring detections of each image count (ties keep file
  order: COCOeval's stable mergesort);
* a ground truth is ignored if it is a crowd, has no labelled keypoint, or, for an area
  range, its area lies outside it (labelled keypoints are counted from ``v > 0``; COCOeval
  reads the file's ``num_keypoints``, which is the same count in COCO files, but CrowdPose's
  leaves out head and neck); detections are matched greedily in score order at each
  OKS threshold .50:.05:.95 to the unmatched (or crowd) ground truth of highest OKS
  (ties go to the later one), a regular ground truth always before an ignored one; a
  detection matched to an ignored ground truth is ignored, and so is an unmatched one whose
  area lies outside the range;
* a detection's area is its keypoints' extent (all K, labelled or not) -- or, when the
  first detection carries a ``bbox``, its box area, as ``COCO.loadRes`` then takes the
  box branch (detections without a box keep the extent, where pycocotools would fail);
* a match to a ground truth whose annotation id is 0 counts as no match (COCOeval stores
  matches as ids and tests them for truth);
* precision is interpolated at the 101 recall points of ``accumulate``; a statistic whose
  area range has no non-ignored ground truth is -1.

The precision-recall curves themselves (:func:`precision_recall`, :class:`PRCurves`) are
what :func:`evaluate` summarizes; the diagnosis's precision-recall breakdown and its figures
(:mod:`posefix.figures`) draw the same arrays.

Detections of other categories than 1 (person) are not evaluated, as COCOeval skips
categories absent from the ground truth; detections on images the ground truth does not list
are dropped by :func:`evaluate` (pycocotools refuses the whole file), and counted, or
refused with ``strict``, by :func:`posefix.commands.evaluate.evaluate_files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .io import Detections, GroundTruth
from .similarity import coco_oks

__all__ = [
    "AREA_RANGES",
    "MAX_DETS",
    "OKS_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "Matching",
    "PRCurves",
    "accumulate",
    "coco_oks",
    "detection_areas",
    "evaluate",
    "format_stats",
    "match_detections",
    "precision_recall",
    "summarize",
]

#: COCOeval's keypoint OKS thresholds .50:.05:.95 (the same linspace, so ``.75`` is found).
OKS_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
#: COCOeval's 101 recall points.
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
#: COCOeval's keypoint area ranges.
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0 ** 2, 1e5 ** 2),
    "medium": (32.0 ** 2, 96.0 ** 2),
    "large": (96.0 ** 2, 1e5 ** 2),
}
#: COCOeval's keypoint ``maxDets``.
MAX_DETS = 20
#: The keys of :func:`evaluate`'s result, in ``COCOeval.stats`` order.
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl",
                               "AR", "AR50", "AR75", "ARm", "ARl")

_EPS = np.spacing(1)

@dataclass
class Matching:
    """COCOeval's greedy matching of detections to ground truth, for every area range and
    OKS threshold at once.

    Detections appear in COCOeval's accumulation order before the global score sort: by
    image id, then by descending score (stable) within the image, keeping at most
    ``max_dets`` per image.

    Attributes:
        det_rows: (N,) rows of the evaluated detections in the input :class:`Detections`.
        scores: (N,) their scores.
        gt_match: (A, T, N) ground-truth row matched to each detection, or -1.
        match_oks: (A, T, N) OKS of that match (NaN where unmatched).
        det_ignore: (A, T, N) detections COCOeval ignores (matched to an ignored ground
            truth, or unmatched and outside the area range).
        counted: (A, T, N) matched in COCOeval's sense (``dtMatches`` true: matched to a
            ground truth whose id is not 0).
        gt_ignore: (A, G) ignored ground truths per area range (all ground-truth rows).
        max_oks: (N,) highest OKS of each detection with any ground truth of its image
            (-inf where the image has none).
        num_beyond_max_dets: detections not evaluated because their image has
            ``max_dets`` better-scoring ones.
        num_other: detections not evaluated for their category or unknown image id.
    """

    det_rows: np.ndarray
    scores: np.ndarray
    gt_match: np.ndarray
    match_oks: np.ndarray
    det_ignore: np.ndarray
    counted: np.ndarray
    gt_ignore: np.ndarray
    max_oks: np.ndarray
    num_beyond_max_dets: int
    num_other: int


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis."""
    n = values.shape[-1]
    return n - 1 - np.argmax(values[..., ::-1], axis=-1)


def detection_areas(dets: Detections, rows: np.ndarray) -> np.ndarray:
    """The areas of detections ``rows`` as COCO.loadRes gives them (and COCOeval's area
    ranges read): the keypoints' extent (all K), or the box area where the first detection
    carries a box and this one has one."""
    if len(rows) == 0:
        return np.zeros(0)
    x, y = dets.keypoints[rows, :, 0], dets.keypoints[rows, :, 1]
    extent = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
    if len(dets) and np.all(np.isfinite(dets.boxes[0])):
        box = dets.boxes[rows]
        has_box = np.all(np.isfinite(box), axis=1)
        return np.where(has_box, box[:, 2] * box[:, 3], extent)
    return extent


def _greedy_match(oks: np.ndarray, exists: np.ndarray, crowd: np.ndarray,
                  slot_ignore: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """COCOeval's greedy matching on a dense block: ``oks`` (I, R, G) of each image's
    detections (by score rank) with its ground-truth slots; ``exists``/``crowd`` (I, G);
    ``slot_ignore`` (A, I, G); ``thr`` (T,). Returns (A, T, I, R) matched slots, or -1."""
    n_img, R, G = oks.shape
    A, T = len(slot_ignore), len(thr)
    match = np.full((A, T, n_img, R), -1, dtype=np.int64)
    avail = np.broadcast_to(exists, (A, T, n_img, G)).copy()
    for r in range(R):
        o = oks[:, r]  # I, G
        q = avail & (o >= thr[:, None, None])
        reg = q & ~slot_ignore[:, None]
        ign = q & slot_ignore[:, None]
        m = np.where(reg.any(-1), _last_argmax(np.where(reg, o, -np.inf)),
                     np.where(ign.any(-1), _last_argmax(np.where(ign, o, -np.inf)), -1))
        match[..., r] = m
        a, t, i = np.nonzero(m >= 0)
        g = m[a, t, i]
        keep = ~crowd[i, g]
        avail[a[keep], t[keep], i[keep], g[keep]] = False
    return match


def _ranked(gt: GroundTruth, dets: Detections, max_dets: int
            ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The evaluated detections' rows in COCOeval's order (by image id, then by descending
    score, stable) with their score rank in their image, at most ``max_dets`` per image;
    also how many were beyond that and how many are of another category or image."""
    known = np.fromiter(gt.images, dtype=np.int64, count=len(gt.images))
    rows = np.flatnonzero((dets.category_ids == 1) & np.isin(dets.image_ids, known))
    num_other = int(len(dets) - len(rows))
    img, sc = dets.image_ids[rows], dets.scores[rows]
    rows = rows[np.lexsort((rows, -sc, img))]
    _, first, inv = np.unique(dets.image_ids[rows], return_index=True, return_inverse=True)
    rank = np.arange(len(rows)) - first[inv.reshape(-1)]
    top = rank < max_dets
    return rows[top], rank[top], int((~top).sum()), num_other


def _grouped_match(oks: np.ndarray, exists: np.ndarray, crowd: np.ndarray,
                   slot_ignore: np.ndarray, thr: np.ndarray, g_count: np.ndarray,
                   d_count: np.ndarray) -> np.ndarray:
    """:func:`_greedy_match` of every image (``oks`` (I, R, Gmax)), the images in groups of
    like ground-truth counts, each padded only to its own largest (most images have 1-2
    persons, a few 10-20): the same matches, less padding. (A, T, I, R) slots or -1."""
    n_img, R, Gmax = oks.shape
    match = np.full((len(slot_ignore), len(thr), n_img, R), -1, dtype=np.int64)
    if not (Gmax and R):
        return match
    group = np.ceil(np.log2(np.maximum(g_count, 1))).astype(np.int64)
    for b in np.unique(group[(g_count > 0) & (d_count > 0)]):
        ims = np.flatnonzero((group == b) & (g_count > 0) & (d_count > 0))
        Gb, Rb = int(g_count[ims].max()), int(min(d_count[ims].max(), R))
        match[:, :, ims, :Rb] = _greedy_match(
            oks[ims, :Rb, :Gb], exists[ims, :Gb], crowd[ims, :Gb], slot_ignore[:, ims, :Gb],
            thr)
    return match


def match_detections(
    gt: GroundTruth,
    dets: Detections,
    thresholds: Sequence[float] | np.ndarray = OKS_THRESHOLDS,
    area_ranges: Sequence[tuple[float, float]] = tuple(AREA_RANGES.values()),
    max_dets: int = MAX_DETS,
) -> Matching:
    """Match detections to ground truth exactly as COCOeval's ``evaluateImg`` does.

    Vectorized over images, area ranges and thresholds; the only loop runs over the
    (at most ``max_dets``) score ranks within an image, which COCOeval's greedy rule makes
    sequential.
    """
    spec = gt.spec
    K = spec.num_keypoints
    if dets.keypoints.shape[1:] != (K, 3):
        raise ValueError(f"detections have {dets.keypoints.shape[1]} keypoints; spec "
                         f"{spec.name} has {K}")
    thr = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)
    ranges = np.asarray(area_ranges, dtype=np.float64).reshape(-1, 2)
    A, T = len(ranges), len(thr)
    rows, rank, num_beyond, num_other = _ranked(gt, dets, max_dets)
    img, sc = dets.image_ids[rows], dets.scores[rows]
    N, G = len(rows), len(gt)

    # Dense per-image layout: images x ranks (detections), images x slots (ground truths).
    image_ids = np.unique(np.concatenate([gt.image_ids, img]))
    n_img = len(image_ids)
    d_im = np.searchsorted(image_ids, img)
    g_order = np.argsort(gt.image_ids, kind="stable")  # file order within an image
    g_im_sorted = np.searchsorted(image_ids, gt.image_ids[g_order])
    g_count = np.bincount(g_im_sorted, minlength=n_img)
    g_start = np.concatenate([[0], np.cumsum(g_count)[:-1]])
    g_slot = np.arange(G) - g_start[g_im_sorted]
    Gmax = int(g_count.max()) if G else 0
    R = int(rank.max()) + 1 if N else 0
    slot_row = np.full((n_img, Gmax), -1, dtype=np.int64)
    slot_row[g_im_sorted, g_slot] = g_order

    # OKS of every (detection, ground truth of its image) pair.
    n_pairs = g_count[d_im]
    p_det = np.repeat(np.arange(N), n_pairs)
    p_slot = np.arange(int(n_pairs.sum())) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    p_gt = slot_row[d_im[p_det], p_slot]
    oks = np.full((n_img, R, Gmax), -np.inf)
    oks[d_im[p_det], rank[p_det], p_slot] = coco_oks(
        dets.keypoints[rows[p_det]], gt.keypoints[p_gt], gt.boxes[p_gt], gt.areas[p_gt],
        spec.sigma_array)

    exists = slot_row >= 0
    safe = np.where(exists, slot_row, 0)
    crowd = gt.iscrowd.astype(bool)[safe] & exists
    base_ignore = gt.iscrowd.astype(bool) | ((gt.keypoints[..., 2] > 0).sum(-1) == 0)
    gt_ignore = base_ignore[None] | (gt.areas[None] < ranges[:, :1]) | (
        gt.areas[None] > ranges[:, 1:])  # A, G
    slot_ignore = gt_ignore[:, safe]  # A, I, Gmax

    match = _grouped_match(oks, exists, crowd, slot_ignore, thr, g_count,
                           np.bincount(d_im, minlength=n_img))
    m = match[:, :, d_im, rank]  # A, T, N
    matched = m >= 0
    a_i, _, n_i = np.nonzero(matched)
    g_i = m[matched]
    gt_row = np.full((A, T, N), -1, dtype=np.int64)
    gt_row[matched] = slot_row[d_im[n_i], g_i]
    match_oks = np.full((A, T, N), np.nan)
    match_oks[matched] = oks[d_im[n_i], rank[n_i], g_i]
    matched_ignored = np.zeros((A, T, N), dtype=bool)
    matched_ignored[matched] = gt_ignore[a_i, gt_row[matched]]
    counted = np.zeros((A, T, N), dtype=bool)
    counted[matched] = gt.ann_ids[gt_row[matched]] != 0
    area = detection_areas(dets, rows)
    out_of_range = (area[None] < ranges[:, :1]) | (area[None] > ranges[:, 1:])  # A, N
    det_ignore = matched_ignored | (~counted & out_of_range[:, None])
    return Matching(
        det_rows=rows, scores=sc, gt_match=gt_row, match_oks=match_oks, det_ignore=det_ignore,
        counted=counted, gt_ignore=gt_ignore,
        max_oks=oks[d_im, rank].max(-1) if Gmax else np.full(N, -np.inf),
        num_beyond_max_dets=num_beyond, num_other=num_other,
    )


@dataclass
class PRCurves:
    """COCOeval's accumulated precision-recall curves: what every AP and AR comes from.

    Attributes:
        precision: (T, R, A) interpolated precision at :data:`RECALL_THRESHOLDS` for each
            OKS threshold and area range (COCOeval's ``eval['precision']`` for the person
            category and ``maxDets``), -1 where no ground truth counts.
        recall: (T, A) final recall, -1 where no ground truth counts.
        oks_thresholds: (T,) the OKS thresholds (:data:`OKS_THRESHOLDS`).
        area_ranges: the area range names (keys of :data:`AREA_RANGES`).
    """

    precision: np.ndarray
    recall: np.ndarray
    oks_thresholds: np.ndarray = field(default_factory=lambda: OKS_THRESHOLDS.copy())
    area_ranges: tuple[str, ...] = tuple(AREA_RANGES)

    def _index(self, oks: float, area: str) -> tuple[int, int]:
        hit = np.flatnonzero(np.isclose(self.oks_thresholds, oks, rtol=0, atol=1e-9))
        if len(hit) == 0:
            raise ValueError(f"OKS threshold {oks} is not one of {self.oks_thresholds.tolist()}")
        return int(hit[0]), self.area_ranges.index(area)

    def curve(self, oks: float, area: str = "all") -> np.ndarray:
        """(R,) precision at :data:`RECALL_THRESHOLDS` for one OKS threshold (-1: undefined)."""
        t, a = self._index(oks, area)
        return self.precision[t, :, a]

    def ap(self, oks: float | None = None, area: str = "all") -> float:
        """AP: the mean precision over the recall points (the area under :meth:`curve`),
        averaged over all thresholds where ``oks`` is None; -1 where undefined."""
        a = self.area_ranges.index(area)
        values = self.precision[:, :, a]
        if oks is not None:
            values = values[self._index(oks, area)[0]]
        return _mean_defined(values)


def _mean_defined(values: np.ndarray) -> float:
    """COCOeval.summarize's mean of the entries > -1 (-1 where there are none)."""
    s = values[values > -1]
    return -1.0 if len(s) == 0 else float(np.mean(s))


def accumulate(mt: Matching, *, ignore_unmatched: bool = False,
               ignore_missed: bool = False) -> PRCurves:
    """COCOeval.accumulate: the precision-recall curves of a :class:`Matching`.

    Args:
        mt: the matching (:func:`match_detections`).
        ignore_unmatched: ignore, at each OKS threshold, every detection not matched at that
            threshold (coco-analyze's curve without background false positives).
        ignore_missed: ignore, at each OKS threshold, every ground truth no detection matched
            at that threshold (coco-analyze's curve without false negatives).
    """
    A, T, N = mt.det_ignore.shape
    Rn = len(RECALL_THRESHOLDS)
    precision = -np.ones((T, Rn, A))
    recall = -np.ones((T, A))
    inds = np.argsort(-mt.scores, kind="mergesort")
    ig = mt.det_ignore[..., inds]
    dtm = mt.counted[..., inds]
    if ignore_unmatched:
        ig = ig | ~dtm
    tps = dtm & ~ig
    fps = ~dtm & ~ig
    tp_sum = np.cumsum(tps, axis=-1).astype(dtype=float)
    fp_sum = np.cumsum(fps, axis=-1).astype(dtype=float)
    if ignore_missed:  # each counted ground truth is matched by at most one detection
        npig = tps.sum(-1)  # A, T
    else:
        npig = np.broadcast_to((~mt.gt_ignore).sum(-1)[:, None], (A, T))
    for a in range(A):
        for t in range(T):
            if npig[a, t] == 0:
                continue
            rc = tp_sum[a, t] / npig[a, t]  # N
            pr = tp_sum[a, t] / (fp_sum[a, t] + tp_sum[a, t] + _EPS)
            recall[t, a] = rc[-1] if N else 0
            # Precision envelope: running maximum from the right.
            env = np.maximum.accumulate(pr[::-1])[::-1]
            pos = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
            q = np.zeros(Rn)
            inside = pos < N
            q[inside] = env[pos[inside]]
            precision[t, :, a] = q
    return PRCurves(precision=precision, recall=recall, oks_thresholds=OKS_THRESHOLDS.copy(),
                    area_ranges=tuple(AREA_RANGES))


def precision_recall(gt: GroundTruth, dets: Detections) -> PRCurves:
    """COCOeval's precision-recall curves of a set of detections (all OKS thresholds and
    area ranges): the one computation behind :func:`evaluate`'s numbers."""
    return accumulate(match_detections(gt, dets))


def summarize(curves: PRCurves) -> dict[str, float]:
    """COCOeval.summarize: the :data:`STAT_NAMES` statistics of precision-recall curves."""
    def rec(oks: float | None, area: str) -> float:
        a = curves.area_ranges.index(area)
        values = curves.recall[:, a]
        if oks is not None:
            values = values[curves._index(oks, area)[0]]
        return _mean_defined(np.atleast_1d(values))

    return {
        "AP": curves.ap(None, "all"),
        "AP50": curves.ap(.5, "all"),
        "AP75": curves.ap(.75, "all"),
        "APm": curves.ap(None, "medium"),
        "APl": curves.ap(None, "large"),
        "AR": rec(None, "all"),
        "AR50": rec(.5, "all"),
        "AR75": rec(.75, "all"),
        "ARm": rec(None, "medium"),
        "ARl": rec(None, "large"),
    }


def evaluate(gt: GroundTruth, dets: Detections) -> dict[str, float]:
    """COCO keypoint AP/AR (``COCOeval`` 'keypoints', the spec's sigmas), keyed by
    :data:`STAT_NAMES`; -1 where no ground truth counts (as COCOeval)."""
    return summarize(precision_recall(gt, dets))


_ROWS = (
    ("AP", "Average Precision", "0.50:0.95", "all"),
    ("AP50", "Average Precision", "0.50", "all"),
    ("AP75", "Average Precision", "0.75", "all"),
    ("APm", "Average Precision", "0.50:0.95", "medium"),
    ("APl", "Average Precision", "0.50:0.95", "large"),
    ("AR", "Average Recall", "0.50:0.95", "all"),
    ("AR50", "Average Recall", "0.50", "all"),
    ("AR75", "Average Recall", "0.75", "all"),
    ("ARm", "Average Recall", "0.50:0.95", "medium"),
    ("ARl", "Average Recall", "0.50:0.95", "large"),
)


def format_stats(stats: dict[str, Any]) -> str:
    """A readable table of :func:`evaluate` /
    :func:`posefix.commands.evaluate.evaluate_files` statistics."""
    lines = []
    if "results" in stats:
        lines.append(f"results: {stats['results']}")
        lines.append(f"ground truth: {stats['gt']} (spec {stats.get('spec', '?')}, "
                     f"{stats.get('num_images', '?')} images, "
                     f"{stats.get('num_ground_truth', '?')} persons counted)")
        lines.append(f"detections: {stats.get('num_detections', '?')}")
        if stats.get("skipped_unknown_image"):
            lines.append(f"skipped: {stats['skipped_unknown_image']} detection(s) on images "
                         "not in the ground truth")
        lines.append("")
    lines.append(f"{'metric':<6}  {'':<17}  {'OKS':<9}  {'area':<6}  {'maxDets':>7}  "
                 f"{'value':>6}")
    for key, name, oks, area in _ROWS:
        v = stats[key]
        lines.append(f"{key:<6}  {name:<17}  {oks:<9}  {area:<6}  {MAX_DETS:>7}  "
                     f"{v:>6.3f}")
    return "\n".join(lines)
