"""Before and after: what refinement did to a set of results, against the ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np

from .diagnosis import classify_keypoints
from .evaluate import evaluate
from .io import Detections, GroundTruth
from .taxonomy import ERROR_TYPES

__all__ = ["compare_results"]


def compare_results(truth: GroundTruth, before: Detections, after: Detections
                    ) -> dict[str, Any]:
    """AP, keypoint-error counts, mean OKS of the matched detections and keypoint type
    transitions (overall and per keypoint) of two result sets of the same persons."""
    out: dict[str, Any] = {"ap_before": evaluate(truth, before), "ap_after": evaluate(truth, after)}
    diag_b, diag_a = classify_keypoints(truth, before), classify_keypoints(truth, after)
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
    out["error_changes"] = {
        "persons_compared": int(len(common)),
        "types": list(ERROR_TYPES),
        "transitions": trans.tolist(),  # [before type][after type], keypoint counts
        "per_keypoint": {name: per_kp[k].tolist() for k, name in enumerate(truth.spec.keypoints)},
        "fixed": {t: int(trans[c, good]) for c, t in enumerate(ERROR_TYPES) if c != good},
        "made": {t: int(trans[good, c]) for c, t in enumerate(ERROR_TYPES) if c != good},
    }
    return out
