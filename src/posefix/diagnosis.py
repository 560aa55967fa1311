"""Keypoint error diagnosis: the taxonomy of Ronchi & Perona (ICCV 2017, coco-analyze).

Detections are matched to ground truth as COCOeval does (greedy in score order, at most
``max_dets`` = 20 per image, regular ground truth before ignored) at one low OKS threshold,
0.1 by default -- coco-analyze's ``oksLocThrs``, the threshold below which a detection is a
background false positive rather than a badly localized person. Every labelled keypoint of a
detection matched to a counted ground truth (not crowd, with labelled keypoints) is then
classified with KS, the keypoint similarity of the COCO OKS (:mod:`posefix.taxonomy`):

* **good**: KS >= 0.85 with its own ground-truth keypoint;
* **jitter**: 0.5 <= KS < 0.85 with it;
* **inversion**: KS < 0.5 with it, but KS >= 0.5 with the left/right partner keypoint of the
  same person (keypoints without a partner, like the nose, are never inverted);
* **swap**: none of those, but KS >= 0.5 with the same or the partner keypoint of *another*
  ground-truth person of the image (each person with its own area);
* **miss**: everything else.

Unlabelled ground-truth keypoints (v = 0, and the spec's ``ignore``) are ``ABSENT``.

Where this differs from coco-analyze (``COCOanalyze._find_kpt_errors``):

1. coco-analyze takes the arg-max of KS over all candidates (own, own partner, every other
   person's same and partner keypoint) and labels by which wins; here the candidates are
   checked in a fixed order: the own keypoint first, so a keypoint with own KS in
   [0.5, 0.85) is jitter even when another candidate is closer (coco-analyze: inversion or
   swap), and a keypoint with own KS >= 0.85 is always good; then the own partner
   (inversion) before the other persons (swap), so a keypoint within KS 0.5 of both its
   partner and another person's keypoint is an inversion here even where the other person's
   is closer (coco-analyze: swap).
2. coco-analyze's good needs KS > 0.85 strictly while its jitter needs KS < 0.85, leaving
   KS == 0.85 unlabelled; here good is KS >= 0.85.
3. coco-analyze matches with its "all" area range [32^2, 1e5^2] (small persons become
   ignored ground truth, but are still diagnosed when matched); here the area range is
   COCOeval's [0, 1e5^2], and detections matched to ignored ground truth (crowd, or no
   labelled keypoint) are not diagnosed and not counted as background false positives.
4. AP gains: coco-analyze moves a corrected keypoint to a point at a fixed KS from the
   ground truth (its distances use sigma^2 where the OKS has (2 sigma)^2, so a jitter lands at
   KS 0.85^(1/4) ~ 0.96, a miss at 0.5^(1/4) ~ 0.84, inversions and swaps at the fourth root
   of the KS they had with the wrong target); here a corrected keypoint is moved exactly onto its ground
   truth, then the whole file is re-evaluated with :func:`posefix.evaluate.evaluate`
   (COCO AP .50:.95, all three area ranges), where coco-analyze reports AP per OKS
   threshold. As coco-analyze, we report each type fixed alone (its "AP improvement") and
   the cumulative fixes in its order miss, swap, inversion, jitter, plus the AP without
   background false positives. Score errors (coco-analyze's optimal rescoring) are not
   analysed. The precision-recall breakdown (:func:`run_analysis`, ``posefix analyze
   --report``) is coco-analyze's stacked curves per OKS threshold: the results as they are,
   the cumulative fixes, then (all four fixed) every detection unmatched at that threshold
   ignored ("without background false positives", as coco-analyze counts them), then also
   every ground truth unmatched at that threshold ignored ("without false negatives").
5. Unmatched detections are split into background false positives (OKS below the
   threshold with every ground truth of the image: they never match at any evaluation
   threshold, so removing them cannot lower AP unless it lets a detection beyond ``maxDets``
   move up)
   and duplicates (near a person a better-scoring detection took); coco-analyze counts
   every unmatched detection as a background false positive and measures their impact by
   ignoring, at each OKS threshold, every detection unmatched at that threshold (the
   breakdown's ``background_fp`` step; the tables' "no background false positives" removes
   only the detections below ``oks_threshold`` with every person, at every threshold).
   Missed persons (false negatives) here are the counted ground truths (not crowd, with a
   labelled keypoint) that no detection matched at OKS ``oks_threshold`` (0.1);
   coco-analyze counts, at each threshold .50:.95, every annotation unmatched at that
   threshold, including persons without labelled keypoints.
6. ``num_overlap`` (for error profiles) counts the other non-crowd persons *with at least
   one labelled keypoint* whose box IoU with the person's box is >= 0.1 (the persons a
   swap can come from, as :mod:`posefix.data` counts them); coco-analyze has no such
   count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .evaluate import (
    PRCurves,
    accumulate,
    evaluate,
    match_detections,
    summarize,
)
from .geometry import paired_box_iou
from .io import Detections, GroundTruth, same_image_pairs
from .similarity import keypoint_similarity
from .spec import KeypointSpec
from .taxonomy import (
    ABSENT,
    ERROR_TYPES,
    GOOD,
    INVERSION,
    JITTER,
    KS_GOOD,
    KS_JITTER,
    MISS,
    SWAP,
)

__all__ = [
    "DEFAULT_OKS_THRESHOLD",
    "OVERLAP_IOU",
    "PR_STEPS",
    "PR_STEP_LABELS",
    "PR_THRESHOLDS",
    "Analysis",
    "Diagnosis",
    "analyze",
    "classify_keypoints",
    "fix_errors",
    "format_pr_breakdown",
    "format_report",
    "overlap_counts",
    "run_analysis",
]

#: coco-analyze's ``oksLocThrs``: matches below it are background false positives.
DEFAULT_OKS_THRESHOLD = 0.1
#: Box IoU at which another person counts as overlapping (for ``num_overlap``).
OVERLAP_IOU = 0.1
#: The order in which coco-analyze corrects error types cumulatively.
_FIX_ORDER = ("miss", "swap", "inversion", "jitter")
#: The curves of the precision-recall breakdown, in stacking order: as is, each error type
#: fixed cumulatively, then without background false positives, then without false negatives.
PR_STEPS: tuple[str, ...] = ("original", *_FIX_ORDER, "background_fp", "false_negatives")
#: The OKS thresholds the breakdown is reported at (``pr_breakdown`` of :func:`analyze`).
PR_THRESHOLDS: tuple[float, ...] = (0.5, 0.75)


@dataclass
class Diagnosis:
    """Per-keypoint error labels of the detections matched to ground truth.

    Attributes:
        spec: keypoint layout.
        oks_threshold: OKS threshold of the matching.
        det_index: (P,) row of each matched detection in the :class:`Detections`.
        gt_index: (P,) row of its ground truth in the :class:`GroundTruth`.
        oks: (P,) OKS of each match.
        labels: (P, K) int8 :mod:`posefix.taxonomy` codes, ``ABSENT`` where the ground
            truth keypoint is unlabelled or ignored.
        ks: (P, K) KS of each keypoint with its own ground truth (NaN where ABSENT).
        num_labelled: (P,) labelled keypoints of each ground truth.
        num_overlap: (P,) other overlapping persons of each ground truth
            (:func:`overlap_counts`).
        swap_possible: (P, K) whether another person of the image has the same or the
            partner keypoint labelled (a swap could be observed).
        unmatched_det_index: rows of evaluated detections matched to nothing.
        background_det_index: those of them below ``oks_threshold`` with every ground truth
            of their image (background false positives; the others are duplicates of a
            person matched by a better-scoring detection).
        missed_gt_index: rows of counted ground truths no detection matched (false
            negatives).
        num_matched_ignored: detections matched to ignored ground truth (crowd, no
            labelled keypoint), not diagnosed.
        num_beyond_max_dets: detections not considered (``max_dets`` better ones in their
            image).
    """

    spec: KeypointSpec
    oks_threshold: float
    det_index: np.ndarray
    gt_index: np.ndarray
    oks: np.ndarray
    labels: np.ndarray
    ks: np.ndarray
    num_labelled: np.ndarray
    num_overlap: np.ndarray
    swap_possible: np.ndarray
    unmatched_det_index: np.ndarray
    background_det_index: np.ndarray
    missed_gt_index: np.ndarray
    num_matched_ignored: int
    num_beyond_max_dets: int

    def __len__(self) -> int:
        return len(self.det_index)

    def counts(self) -> np.ndarray:
        """(5,) number of keypoints of each type (taxonomy order)."""
        lab = self.labels[self.labels != ABSENT].astype(np.int64)
        return np.bincount(lab, minlength=len(ERROR_TYPES))


def overlap_counts(gt: GroundTruth, iou: float = OVERLAP_IOU) -> np.ndarray:
    """(N,) for each ground-truth person, the number of *other* non-crowd persons of its
    image with at least one labelled keypoint whose box IoU with its box is >= ``iou``."""
    candidate = gt.counted
    i, j = same_image_pairs(gt.image_ids, gt.image_ids)
    keep = (i != j) & candidate[j]
    i, j = i[keep], j[keep]
    hit = paired_box_iou(gt.boxes[i], gt.boxes[j]) >= iou
    return np.bincount(i[hit], minlength=len(gt)).astype(np.int64)


def classify_keypoints(
    gt: GroundTruth, dets: Detections, oks_threshold: float = DEFAULT_OKS_THRESHOLD,
    max_dets: int = 20,
) -> Diagnosis:
    """Match detections to ground truth at ``oks_threshold`` and label every keypoint.

    See the module docstring for the matching and the five types.
    """
    spec = gt.spec
    K = spec.num_keypoints
    mt = match_detections(gt, dets, thresholds=[oks_threshold],
                          area_ranges=[(0.0, 1e5 ** 2)], max_dets=max_dets)
    gt_row = mt.gt_match[0, 0]
    matched = gt_row >= 0
    ignored_gt = mt.gt_ignore[0]
    diag_mask = matched.copy()
    diag_mask[matched] = ~ignored_gt[gt_row[matched]]
    det_index = mt.det_rows[diag_mask]
    gt_index = gt_row[diag_mask]
    oks = mt.match_oks[0, 0][diag_mask]
    matched_gts = np.zeros(len(gt), dtype=bool)
    matched_gts[gt_row[matched]] = True
    missed = np.flatnonzero(~ignored_gt & ~matched_gts)
    unmatched = mt.det_rows[~matched]
    background = mt.det_rows[~matched & (mt.max_oks < oks_threshold)]

    sig = spec.sigma_array
    det_kp = dets.keypoints[det_index]
    own = gt.keypoints[gt_index]
    area = gt.areas[gt_index]
    labelled_all = (gt.keypoints[..., 2] > 0) & spec.used_mask[None]
    labelled = labelled_all[gt_index]
    ks = keypoint_similarity(det_kp, own, area, sig)

    partner = spec.partner_index
    has_partner = partner >= 0
    p_idx = np.where(has_partner, partner, np.arange(K))
    ks_inv = keypoint_similarity(det_kp, own[:, p_idx], area, sig)
    inv_ok = has_partner[None] & labelled[:, p_idx]
    inversion = inv_ok & (ks_inv >= KS_JITTER)

    # Other persons of the image: best KS with their same or partner keypoint.
    P = len(det_index)
    p, o = same_image_pairs(gt.image_ids[gt_index], gt.image_ids)
    keep = o != gt_index[p]
    p, o = p[keep], o[keep]
    ks_same = keypoint_similarity(det_kp[p], gt.keypoints[o], gt.areas[o], sig)
    ks_part = keypoint_similarity(det_kp[p], gt.keypoints[o][:, p_idx], gt.areas[o], sig)
    same_ok = labelled_all[o]
    part_ok = has_partner[None] & labelled_all[o][:, p_idx]
    best = np.where(same_ok, ks_same, -np.inf)
    best = np.maximum(best, np.where(part_ok, ks_part, -np.inf))
    best_other = np.full((P, K), -np.inf)
    np.maximum.at(best_other, p, best)
    swap_possible = np.zeros((P, K), dtype=bool)
    np.logical_or.at(swap_possible, p, same_ok | part_ok)
    swap = best_other >= KS_JITTER

    labels = np.select(
        [~labelled, ks >= KS_GOOD, ks >= KS_JITTER, inversion, swap],
        [ABSENT, GOOD, JITTER, INVERSION, SWAP], default=MISS).astype(np.int8)
    return Diagnosis(
        spec=spec, oks_threshold=float(oks_threshold), det_index=det_index,
        gt_index=gt_index, oks=oks, labels=labels, ks=np.where(labelled, ks, np.nan),
        num_labelled=labelled.sum(-1).astype(np.int64),
        num_overlap=overlap_counts(gt)[gt_index], swap_possible=swap_possible & labelled,
        unmatched_det_index=unmatched, background_det_index=background,
        missed_gt_index=missed,
        num_matched_ignored=int((matched & ~diag_mask).sum()),
        num_beyond_max_dets=mt.num_beyond_max_dets,
    )


def fix_errors(gt: GroundTruth, dets: Detections, diagnosis: Diagnosis,
               types: tuple[str, ...] | list[str]) -> Detections:
    """Detections with every keypoint of the given error types moved onto its ground truth
    (scores and everything else unchanged)."""
    codes = [ERROR_TYPES.index(t) for t in types]
    fix = np.isin(diagnosis.labels, codes)  # P, K
    kp = dets.keypoints.copy()
    sub = kp[diagnosis.det_index]
    target = gt.keypoints[diagnosis.gt_index, :, :2]
    sub[..., :2] = np.where(fix[..., None], target, sub[..., :2])
    kp[diagnosis.det_index] = sub
    return Detections(image_ids=dets.image_ids, keypoints=kp, scores=dets.scores,
                      boxes=dets.boxes, category_ids=dets.category_ids)


def _breakdown(labels: np.ndarray) -> dict[str, Any]:
    """Counts and rates of each type among the labelled entries of ``labels``."""
    lab = labels[labels != ABSENT].astype(np.int64)
    n = len(lab)
    counts = np.bincount(lab, minlength=len(ERROR_TYPES))
    return {
        "labelled": int(n),
        "counts": {t: int(c) for t, c in zip(ERROR_TYPES, counts, strict=True)},
        "rates": {t: (float(c) / n if n else 0.0) for t, c in zip(ERROR_TYPES, counts,
                                                                   strict=True)},
    }


def _ap_entry(stats: dict[str, float], base: float) -> dict[str, float]:
    return {"AP": stats["AP"], "AP50": stats["AP50"], "AP75": stats["AP75"],
            "AR": stats["AR"], "gain": stats["AP"] - base}


@dataclass
class Analysis:
    """An :func:`analyze` report with what it was computed from.

    Attributes:
        report: the :func:`analyze` report (JSON-ready).
        diagnosis: the keypoint labels (:func:`classify_keypoints`).
        curves: :data:`PR_STEPS` -> precision-recall curves (all OKS thresholds and area
            ranges) from which ``report["ap"]``, ``report["ap_if_fixed"]["cumulative"]``
            and ``report["pr_breakdown"]`` were summarized.
    """

    report: dict[str, Any]
    diagnosis: Diagnosis
    curves: dict[str, PRCurves]


def _threshold_key(oks: float) -> str:
    return f"{oks:.2f}"


def run_analysis(gt: GroundTruth, dets: Detections,
                 oks_threshold: float = DEFAULT_OKS_THRESHOLD,
                 diagnosis: Diagnosis | None = None) -> Analysis:
    """:func:`analyze`, keeping the diagnosis and the precision-recall curves of the
    breakdown (the results as they are, each error type fixed cumulatively, then without
    background false positives and without false negatives; see the module docstring)."""
    d = diagnosis if diagnosis is not None else classify_keypoints(gt, dets, oks_threshold)
    spec = gt.spec
    curves: dict[str, PRCurves] = {"original": accumulate(match_detections(gt, dets))}
    base = summarize(curves["original"])
    labels = d.labels
    per_kp = {name: _breakdown(labels[:, k]) for k, name in enumerate(spec.keypoints)}
    groups = dict(spec.groups)
    rest = [k for k in range(spec.num_keypoints) if spec.group_of[k] == "other"]
    if rest and "other" not in groups:
        groups["other"] = tuple(rest)
    per_group = {g: _breakdown(labels[:, list(idx)]) for g, idx in groups.items()}
    with_type = (labels[..., None] == np.arange(len(ERROR_TYPES))).any(1).sum(0)

    cumulative = []
    for i in range(1, len(_FIX_ORDER) + 1):
        fixed = _FIX_ORDER[:i]
        mt = match_detections(gt, fix_errors(gt, dets, d, fixed))
        curves[fixed[-1]] = accumulate(mt)
        cumulative.append({"fixed": list(fixed),
                           **_ap_entry(summarize(curves[fixed[-1]]), base["AP"])})
    # The first cumulative step is the first type fixed alone.
    alone = {t: _ap_entry(evaluate(gt, fix_errors(gt, dets, d, [t])), base["AP"])
             if i else {k: v for k, v in cumulative[0].items() if k != "fixed"}
             for i, t in enumerate(_FIX_ORDER)}
    curves["background_fp"] = accumulate(mt, ignore_unmatched=True)
    curves["false_negatives"] = accumulate(mt, ignore_unmatched=True, ignore_missed=True)
    keep = np.ones(len(dets), dtype=bool)
    keep[d.background_det_index] = False
    no_bg = _ap_entry(evaluate(gt, dets.select(keep)), base["AP"])

    counted = gt.counted
    report = {
        "spec": spec.name,
        "oks_threshold": d.oks_threshold,
        "num_images": len(gt.images),
        "num_ground_truth": int(counted.sum()),
        "num_detections": len(dets),
        "matched": len(d),
        "unmatched_detections": int(len(d.unmatched_det_index)),
        "background_false_positives": int(len(d.background_det_index)),
        "duplicates": int(len(d.unmatched_det_index) - len(d.background_det_index)),
        "missed_ground_truth": int(len(d.missed_gt_index)),
        "matched_to_ignored": d.num_matched_ignored,
        "beyond_max_dets": d.num_beyond_max_dets,
        "keypoints": _breakdown(labels),
        "detections_with": {t: int(c) for t, c in zip(ERROR_TYPES, with_type, strict=True)},
        "per_keypoint": per_kp,
        "per_group": per_group,
        "ap": dict(base),
        "ap_if_fixed": {
            "alone": alone,
            "cumulative": cumulative,
            "background_false_positives": no_bg,
        },
        # AP (area under each curve, area range "all") of the precision-recall breakdown.
        "pr_breakdown": {
            _threshold_key(t): {step: curves[step].ap(t) for step in PR_STEPS}
            for t in PR_THRESHOLDS
        },
    }
    return Analysis(report=report, diagnosis=d, curves=curves)


def analyze(gt: GroundTruth, dets: Detections, oks_threshold: float = DEFAULT_OKS_THRESHOLD,
            diagnosis: Diagnosis | None = None) -> dict[str, Any]:
    """Error report of a set of detections: the keypoint error breakdown overall, per
    keypoint and per body group, background false positives and missed persons, the
    AP gained by correcting each error type, and the AP at OKS .50 and .75 of the
    precision-recall breakdown (``pr_breakdown``; see the module docstring)."""
    return run_analysis(gt, dets, oks_threshold, diagnosis).report


#: Readable names of the :data:`PR_STEPS`, as the tables and figures show them.
PR_STEP_LABELS: dict[str, str] = {
    "original": "as is",
    "miss": "miss fixed",
    "swap": "+ swap fixed",
    "inversion": "+ inversion fixed",
    "jitter": "+ jitter fixed",
    "background_fp": "+ no background FP",
    "false_negatives": "+ no false negatives",
}


def format_pr_breakdown(breakdown: dict[str, dict[str, float]]) -> list[str]:
    """Table lines of an :func:`analyze` report's ``pr_breakdown``."""
    keys = list(breakdown)
    head = (f"{'AP at OKS, fixed cumulatively':<34} "
            + " ".join(f"{'OKS ' + k:>9}" for k in keys))
    out = [head, "-" * len(head)]
    for step in PR_STEPS:
        out.append(f"{PR_STEP_LABELS[step]:<34} "
                   + " ".join(f"{breakdown[k][step]:9.3f}" for k in keys))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def _type_table(title: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    head = f"{title:<16} {'labelled':>8}  " + "  ".join(f"{t:>9}" for t in ERROR_TYPES)
    out = [head, "-" * len(head)]
    for name, b in rows.items():
        out.append(f"{name:<16} {b['labelled']:>8}  "
                   + "  ".join(f"{_pct(b['rates'][t]):>8}%" for t in ERROR_TYPES))
    return out


def format_report(report: dict[str, Any]) -> str:
    """Readable tables of an :func:`analyze` report."""
    r = report
    lines = []
    if "results" in r:
        lines.append(f"results: {r['results']}")
        lines.append(f"ground truth: {r['gt']} (spec {r['spec']})")
    lines.append(
        f"{r['num_images']} images, {r['num_ground_truth']} persons counted, "
        f"{r['num_detections']} detections; matching at OKS {r['oks_threshold']:.2f}")
    lines.append(
        f"matched {r['matched']}, unmatched {r['unmatched_detections']} "
        f"({r['background_false_positives']} background false positives, "
        f"{r['duplicates']} duplicates), missed persons {r['missed_ground_truth']}")
    lines.append(f"matched to crowd/unlabelled ground truth {r['matched_to_ignored']}, "
                 f"beyond maxDets {r['beyond_max_dets']}")
    if r.get("skipped_unknown_image"):
        lines.append(f"skipped {r['skipped_unknown_image']} detection(s) on images not in "
                     "the ground truth")
    ap = r["ap"]
    lines.append(f"AP {ap['AP']:.3f}  AP50 {ap['AP50']:.3f}  AP75 {ap['AP75']:.3f}  "
                 f"AR {ap['AR']:.3f}")
    lines.append("")
    lines += _type_table("keypoint errors", {"all": r["keypoints"]})
    lines.append("")
    lines += _type_table("per body group", r["per_group"])
    lines.append("")
    lines += _type_table("per keypoint", r["per_keypoint"])
    lines.append("")
    fixes = r["ap_if_fixed"]
    lines.append(f"{'AP if fixed':<34} {'AP':>6} {'AP50':>6} {'AP75':>6} {'gain':>7}")
    lines.append("-" * 62)

    def row(label: str, e: dict[str, float]) -> str:
        return (f"{label:<34} {e['AP']:6.3f} {e['AP50']:6.3f} {e['AP75']:6.3f} "
                f"{e['gain']:+7.3f}")

    lines.append(row("(as is)", {**ap, "gain": 0.0}))
    for t, e in fixes["alone"].items():
        lines.append(row(f"{t} only", e))
    for e in fixes["cumulative"][1:]:
        lines.append(row(" + ".join(e["fixed"]), e))
    lines.append(row("no background false positives", fixes["background_false_positives"]))
    if "pr_breakdown" in r:
        lines.append("")
        lines += format_pr_breakdown(r["pr_breakdown"])
    if "report" in r:
        lines.append("")
        lines.append(f"report written to {r['report']}")
    if "profile" in r:
        lines.append("")
        lines.append(f"error profile written to {r['profile']}")
    return "\n".join(lines)
