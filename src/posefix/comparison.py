"""Before and after: what refinement did to a set of results, against the ground truth."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .diagnosis import Diagnosis, classify_keypoints
from .evaluate import evaluate
from .io import Detections, GroundTruth
from .taxonomy import ERROR_TYPES

__all__ = ["MIN_CHANGE", "MOVED_PX", "STEPS", "align_rows", "attribute_change",
           "compare_results", "extreme_images", "image_oks_change", "moved_keypoints",
           "person_oks", "persons_oks_change"]


def compare_results(truth: GroundTruth, before: Detections, after: Detections,
                    diagnoses: tuple[Diagnosis, Diagnosis] | None = None,
                    evaluations: tuple[dict[str, float], dict[str, float]] | None = None,
                    ) -> dict[str, Any]:
    """AP, keypoint-error counts, mean OKS of the matched detections (and, as
    ``mean_oks_both``, of the persons matched before and after) and keypoint type
    transitions (overall and per keypoint) of two result sets of the same persons.

    ``diagnoses``: the two sets' :func:`posefix.diagnosis.classify_keypoints`, and
    ``evaluations`` their :func:`posefix.evaluate.evaluate`, where the caller has them
    (default: computed here)."""
    ap_b, ap_a = evaluations if evaluations is not None else (
        evaluate(truth, before), evaluate(truth, after))
    out: dict[str, Any] = {"ap_before": ap_b, "ap_after": ap_a}
    diag_b, diag_a = diagnoses if diagnoses is not None else (
        classify_keypoints(truth, before), classify_keypoints(truth, after))
    n = len(ERROR_TYPES)

    def counts(d: Any) -> dict[str, int]:
        lab = np.asarray(d.labels).reshape(-1)
        return {t: int((lab == c).sum()) for c, t in enumerate(ERROR_TYPES)}

    # Keypoints of ground-truth persons matched both before and after: type transitions.
    gb, ga = np.asarray(diag_b.gt_index), np.asarray(diag_a.gt_index)
    common, ib, ia = np.intersect1d(gb, ga, assume_unique=True, return_indices=True)
    lb, la = np.asarray(diag_b.labels)[ib], np.asarray(diag_a.labels)[ia]  # persons, K
    kp = np.broadcast_to(np.arange(lb.shape[1]), lb.shape)
    both = (lb >= 0) & (la >= 0)
    per_kp = np.zeros((lb.shape[1], n, n), dtype=np.int64)  # [keypoint][before][after]
    np.add.at(per_kp, (kp[both], lb[both], la[both]), 1)
    trans = per_kp.sum(0)
    good = ERROR_TYPES.index("good")
    out["errors_before"] = counts(diag_b)
    out["errors_after"] = counts(diag_a)
    out["matched_before"] = int(len(gb))
    out["matched_after"] = int(len(ga))
    # Mean OKS of the matched detections: finer than AP when there are few persons.
    out["mean_oks_before"] = float(np.mean(diag_b.oks)) if len(gb) else float("nan")
    out["mean_oks_after"] = float(np.mean(diag_a.oks)) if len(ga) else float("nan")
    # ... and of the persons matched both before and after: like for like (a person that
    # refinement lifts over the matching threshold enters the mean above with a low OKS)
    out["mean_oks_both"] = [float(np.mean(np.asarray(d.oks)[i])) if len(common) else float("nan")
                            for d, i in ((diag_b, ib), (diag_a, ia))]
    out["error_changes"] = {
        "persons_compared": int(len(common)),
        "types": list(ERROR_TYPES),
        "transitions": trans.tolist(),  # [before type][after type], keypoint counts
        "per_keypoint": {name: per_kp[k].tolist() for k, name in enumerate(truth.spec.keypoints)},
        "fixed": {t: int(trans[c, good]) for c, t in enumerate(ERROR_TYPES) if c != good},
        "made": {t: int(trans[good, c]) for c, t in enumerate(ERROR_TYPES) if c != good},
    }
    return out


#: A keypoint "moved" when refinement displaced it by more than this (image pixels): the
#: error gate keeps input keypoints, which come back through the crop's inverse affine map
#: with rounding error far below it.
MOVED_PX = 0.05
#: A person's OKS change, or an image's summed one, smaller than this is no change (it
#: would print as 0.000).
MIN_CHANGE = 5e-4
#: Steps from the input to the refined output, in the order :func:`attribute_change`
#: applies them: each step's AP change is its part of the whole.
STEPS = ("keypoints", "scores", "nms")


def moved_keypoints(before: Detections, after: Detections, spec_used: np.ndarray | None = None,
                    tol: float = MOVED_PX) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) keypoints refinement moved (present in the input, displaced more than
    ``tol`` px) and added (absent in the input, placed after), for row-aligned results."""
    kb, ka = before.keypoints, after.keypoints
    present_b = ~np.all(kb[..., :2] == 0, axis=-1) & (kb[..., 2] > 0)
    present_a = ~np.all(ka[..., :2] == 0, axis=-1)
    if spec_used is not None:
        present_b &= spec_used[None]
        present_a &= spec_used[None]
    dist = np.linalg.norm(ka[..., :2] - kb[..., :2], axis=-1)
    return present_b & present_a & (dist > tol), ~present_b & present_a


def person_oks(truth: GroundTruth, dets: Detections, diagnosis: Diagnosis | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
    """(G,) OKS of each ground-truth person with the detection matched to it (0 where none,
    as :func:`posefix.diagnosis.classify_keypoints` matches) and (G,) that detection's row
    (-1 where none); ``diagnosis``: ``dets``' classification, where the caller has it."""
    d = diagnosis if diagnosis is not None else classify_keypoints(truth, dets)
    oks, row = np.zeros(len(truth)), np.full(len(truth), -1, dtype=np.int64)
    oks[d.gt_index] = d.oks
    row[d.gt_index] = d.det_index
    return oks, row


def attribute_change(truth: GroundTruth, before: Detections, refined: Detections,
                     kept: np.ndarray, eps: float = MIN_CHANGE,
                     diagnoses: tuple[Diagnosis, Diagnosis] | None = None,
                     evaluations: tuple[dict[str, float], dict[str, float]] | None = None,
                     ) -> dict[str, Any]:
    """Split what refinement changed into its three steps, applied in turn: the keypoints
    moved (refined keypoints, input person scores), the new person scores, and OKS-NMS.

    Args:
        truth: the ground truth.
        before: the input results.
        refined: the refined results *before* OKS-NMS, row for row the input's.
        kept: rows of ``refined`` that OKS-NMS kept (the output is ``refined.select(kept)``).
        eps: a person's OKS change smaller than this is no change (a person changes when
            its OKS changes or it becomes matched or unmatched; matching an equally good
            duplicate instead is no change).
        diagnoses, evaluations: the input's and the output's (``refined.select(kept)``)
            :func:`posefix.diagnosis.classify_keypoints` and :func:`posefix.evaluate.evaluate`,
            as :func:`compare_results` took them, where the caller has them (default:
            computed here).

    Returns:
        ``ap`` (AP after each of input, keypoints, scores, nms), ``parts`` (step -> AP
        change; they add up to the total), ``ap_scores_only`` (input keypoints with the new
        scores), ``keypoints_moved``/``keypoints_added``/``detections_moved`` (persons with a
        moved keypoint), ``removed_by_nms`` (rows) and ``removed_matched`` (those matched to a
        person in the input), ``persons`` (per counted person whose OKS changed: image, OKS
        per step, ``causes``), ``image_change`` (image id -> summed OKS change) and
        ``moved``/``added`` masks (N, K).
    """
    kept = np.sort(np.asarray(kept, dtype=np.int64))
    with_kps = Detections(image_ids=before.image_ids, keypoints=refined.keypoints,
                          scores=before.scores, boxes=before.boxes,
                          category_ids=before.category_ids)
    scores_only = Detections(image_ids=before.image_ids, keypoints=before.keypoints,
                             scores=refined.scores, boxes=before.boxes,
                             category_ids=before.category_ids)
    stages = [before, with_kps, refined, refined.select(kept)]
    # The first and last stages (input, output) as the caller measured them, if it did.
    known_ap = dict(zip((0, 3), evaluations, strict=True)) if evaluations is not None else {}
    known_d = dict(zip((0, 3), diagnoses, strict=True)) if diagnoses is not None else {}
    ap = [float((known_ap[i] if i in known_ap else evaluate(truth, s))["AP"])
          for i, s in enumerate(stages)]
    oks = np.zeros((len(stages), len(truth)))
    rows = np.zeros((len(stages), len(truth)), dtype=np.int64)
    for i, s in enumerate(stages):
        oks[i], rows[i] = person_oks(truth, s, known_d.get(i))
    rows[3] = np.where(rows[3] >= 0, kept[np.maximum(rows[3], 0)], -1)  # input rows
    moved, added = moved_keypoints(before, refined, truth.spec.used_mask)
    removed = np.setdiff1d(np.arange(len(before)), kept)
    counted = np.flatnonzero(truth.counted)
    steps = np.diff(oks, axis=0)  # 3, G
    persons = []
    found = rows >= 0
    for g in counted:
        if abs(oks[3, g] - oks[0, g]) < eps and found[0, g] == found[3, g]:
            continue
        causes = [s for j, s in enumerate(STEPS)
                  if abs(steps[j, g]) >= eps or found[j, g] != found[j + 1, g]]
        persons.append({"person": int(g), "image_id": int(truth.image_ids[g]),
                        "oks": [float(o) for o in oks[:, g]],
                        "matched": [bool(r >= 0) for r in rows[:, g]],
                        "change": float(oks[3, g] - oks[0, g]), "causes": causes})
    change = oks[3] - oks[0]
    image_change = {int(i): float(change[counted][truth.image_ids[counted] == i].sum())
                    for i in np.unique(truth.image_ids[counted])}
    return {
        "ap": dict(zip(("input", *STEPS), ap, strict=True)),
        "parts": {s: ap[j + 1] - ap[j] for j, s in enumerate(STEPS)},
        "ap_scores_only": float(evaluate(truth, scores_only)["AP"]),
        "keypoints_moved": int(moved.sum()), "keypoints_added": int(added.sum()),
        "detections_moved": int(moved.any(1).sum()),
        "removed_by_nms": removed, "removed_matched": int(np.isin(removed, rows[0]).sum()),
        "persons": persons, "image_change": image_change, "moved": moved, "added": added,
    }


def extreme_images(change: Mapping[int, float], num: int, eps: float = MIN_CHANGE,
                   ) -> tuple[list[int], list[int]]:
    """(rose, fell): the ids of the images whose summed OKS change (``change``: image id
    -> change) rose most and fell most, by ``eps`` or more, at most ``num`` each, the largest
    first; equal changes by image id (rises from the lowest id, falls from the highest)."""
    ids = sorted(change, key=lambda i: (-change[i], i))
    rose = [i for i in ids[:num] if change[i] >= eps]
    fell = [i for i in ids[::-1][:num] if change[i] <= -eps]
    return rose, fell


def persons_oks_change(truth: GroundTruth, diagnoses: tuple[Diagnosis, Diagnosis],
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(persons, OKS before, OKS after) of the counted persons matched before or after by
    the two :func:`posefix.diagnosis.classify_keypoints` (OKS 0 where unmatched)."""
    before, after = diagnoses
    ob, oa = np.zeros(len(truth)), np.zeros(len(truth))
    ob[before.gt_index] = before.oks
    oa[after.gt_index] = after.oks
    persons = np.union1d(before.gt_index, after.gt_index).astype(np.int64)
    return persons, ob[persons], oa[persons]


def image_oks_change(truth: GroundTruth, diagnoses: tuple[Diagnosis, Diagnosis],
                     ) -> dict[int, float]:
    """Image id -> the summed OKS change of its persons (:func:`persons_oks_change`): what
    the refine report's examples and the demo's pictures are ranked by
    (:func:`extreme_images`)."""
    persons, ob, oa = persons_oks_change(truth, diagnoses)
    img = truth.image_ids[persons]
    return {int(i): float(np.sum((oa - ob)[img == i])) for i in np.unique(img)}


def align_rows(before: Detections, after: Detections) -> np.ndarray:
    """(M,) the row of ``before`` each row of ``after`` refines (-1: none found), for an
    ``after`` that keeps ``before``'s rows in order less some (as ``posefix refine`` writes
    its output, less the OKS-NMS suppressions).

    Per image, the order-keeping assignment of after-rows to before-rows with the least
    summed median keypoint displacement (dynamic programming); an image with more rows
    after than before is left unaligned.
    """
    out = np.full(len(after), -1, dtype=np.int64)
    for image_id in np.unique(after.image_ids):
        a = np.flatnonzero(after.image_ids == image_id)
        b = np.flatnonzero(before.image_ids == image_id)
        m, n = len(a), len(b)
        if m == 0 or m > n:
            continue
        d = np.linalg.norm(after.keypoints[a][:, None, :, :2] - before.keypoints[b][None, :, :, :2],
                           axis=-1)
        cost = np.median(d, axis=-1)  # m, n
        best = np.full((m + 1, n + 1), np.inf)
        best[0, :] = 0.0  # best[i, j]: first i after-rows placed among the first j before-rows
        for i in range(1, m + 1):
            for j in range(i, n + 1):
                best[i, j] = min(best[i, j - 1], best[i - 1, j - 1] + cost[i - 1, j - 1])
        i, j = m, n
        while i > 0:
            if best[i, j] == best[i, j - 1] and j > i:
                j -= 1
            else:
                out[a[i - 1]] = b[j - 1]
                i, j = i - 1, j - 1
    return out
