"""``posefix evaluate``: a results file's COCO keypoint AP/AR against an annotation file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..evaluate import evaluate
from ..formats import read_poses, sniff_format, to_detections
from ..io import Detections, GroundTruth, load_ground_truth, load_results
from ..options import EvaluateOptions, with_overrides

__all__ = ["evaluate_files", "load_evaluation_inputs", "require_persons"]


def load_evaluation_inputs(
    gt_path: str | Path, results_path: str | Path, options: EvaluateOptions,
) -> tuple[GroundTruth, Detections, int]:
    """Load ground truth (only its images of ``options.split``, if given) and results for
    evaluation; the results in any format of :mod:`posefix.formats` (``options.format``
    None: detected), as ``posefix refine`` reads them.

    Returns ``(gt, dets, num_unknown)``: detections on images the ground truth does not
    list are dropped and counted (with a warning), or raise :class:`InputError` naming the
    first one if ``strict``. A ground truth without a person to evaluate against is an
    :class:`InputError` (pycocotools would give AP -1 without a word).
    """
    strict = options.strict
    gt = load_ground_truth(gt_path, spec=options.spec, split=options.split)
    require_persons(gt, gt_path, "nothing to evaluate against")
    fmt = options.format or sniff_format(results_path)
    if fmt != "coco" or Path(results_path).is_dir():
        poses = read_poses(results_path, gt.spec, fmt, gt.images, strict)
        dets = to_detections(poses, gt.images, results_path, strict)
        return gt, dets, len(poses.detections) - len(dets)
    dets = load_results(results_path, gt.spec)  # every entry: rows are entry indices
    known = np.fromiter(gt.images, dtype=np.int64, count=len(gt.images))
    unknown = ~np.isin(dets.image_ids, known)
    n_unknown = int(unknown.sum())
    if n_unknown:
        first = int(np.flatnonzero(unknown)[0])
        if strict:
            raise InputError(results_path, f"unknown image_id {int(dets.image_ids[first])} "
                             f"(not in {gt_path})", first, "image_id")
        warnings.warn(f"{results_path}: skipped {n_unknown} detection(s) with an image_id "
                      f"not in {gt_path}", stacklevel=2)
        dets = dets.select(~unknown)
    return gt, dets, n_unknown


def require_persons(gt: GroundTruth, path: str | Path, why: str) -> None:
    """An :class:`InputError` naming ``path`` where ``gt`` has no person that counts (not
    crowd, a keypoint labelled)."""
    if not gt.counted.any():
        raise InputError(path, f"has no person with a labelled keypoint ({len(gt)} "
                         f"annotation(s), {len(gt.images)} image(s)): {why}")


def evaluate_files(
    gt_path: str | Path, results_path: str | Path, options: EvaluateOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate a COCO keypoint results file against an annotation file (only its images
    of ``options.split``, if given: see :func:`posefix.io.load_ground_truth`).

    ``options``: how the inputs are read (:class:`posefix.options.EvaluateOptions`);
    ``overrides``: its fields as keywords (``strict=True``), the older call form.

    Returns the :data:`posefix.evaluate.STAT_NAMES` statistics plus ``num_images``, ``num_ground_truth``
    (persons that count: not crowd, with labelled keypoints), ``num_detections``,
    ``skipped_unknown_image`` (detections on images not in the ground truth), ``spec``,
    ``gt`` and ``results``.
    """
    options = with_overrides(EvaluateOptions, options, overrides)
    gt, dets, n_unknown = load_evaluation_inputs(gt_path, results_path, options)
    stats: dict[str, Any] = dict(evaluate(gt, dets))
    counted = gt.counted
    stats.update({
        "num_images": len(gt.images),
        "num_ground_truth": int(counted.sum()),
        "num_detections": len(dets),
        "skipped_unknown_image": n_unknown,
        "spec": gt.spec.name,
        "gt": str(gt_path),
        "results": str(results_path),
    })
    return stats
