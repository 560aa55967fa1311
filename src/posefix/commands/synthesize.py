"""``posefix synthesize``: synthetic input poses made from a ground-truth file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import load_ground_truth, load_results
from ..jsonfiles import round_like_python, write_json_list_atomic
from ..options import SynthesizeOptions, with_overrides
from ..outputs import check_outputs
from ..spec import load_spec
from ..synthesis import estimates_for, overlap_index, synthesize

__all__ = ["synthesize_file"]


def synthesize_file(
    gt_path: str | Path,
    out_path: str | Path,
    options: SynthesizeOptions | None = None,
    **overrides: Any,
) -> Path:
    """Write synthesized input poses for a COCO keypoint file as a COCO results file.

    One entry per non-crowd person with a labelled keypoint: ``keypoints`` (x, y, v with
    v = 1 present, 0 absent), ``score`` 1.0, the person's ground-truth ``bbox``, and two
    extra fields (ignored by COCO tools): ``gt_ann_id`` and ``error_types``, the taxonomy
    code of each keypoint (-1 where none was synthesized). Written atomically, never over
    an input (:func:`posefix.outputs.check_outputs`, before any work); a ground truth
    without such a person is an :class:`~posefix.errors.InputError`. ``options``: how
    (:class:`posefix.options.SynthesizeOptions`); ``overrides``: its fields as keywords
    (``seed=1``), the older call form.
    """
    options = with_overrides(SynthesizeOptions, options, overrides)
    spec, profile, trainset_results = options.spec, options.profile, options.trainset_results
    check_outputs({"--out": out_path}, inputs={
        "gt": gt_path, "trainset results": trainset_results,
        **{k: Path(v) for k, v in (("spec", spec), ("profile", profile))
           if isinstance(v, (str, Path)) and Path(v).is_file()}})
    gt = load_ground_truth(gt_path, spec=spec)
    spec = gt.spec if spec is None else load_spec(spec)
    rows = np.flatnonzero(~gt.iscrowd & ((gt.keypoints[..., 2] > 0) & spec.used_mask).any(1))
    if not len(rows):
        raise InputError(gt_path, f"has no person with a labelled keypoint ({len(gt)} "
                         f"annotation(s), {len(gt.images)} image(s)): nothing to synthesize "
                         "from")
    idx = overlap_index(gt, rows, options.iou)
    others = gt.keypoints[np.maximum(idx, 0)].copy()
    others[idx < 0] = 0.0
    estimated = None
    if trainset_results is not None:
        dets = load_results(trainset_results, spec, image_ids=gt.images.keys())
        estimated = estimates_for(gt, dets, rows)
    poses, types = synthesize(
        gt.keypoints[rows], gt.areas[rows], spec, profile, np.random.default_rng(options.seed),
        others=others, estimated=estimated, others_areas=gt.areas[np.maximum(idx, 0)],
    )
    return write_json_list_atomic(out_path, _entries(
        gt.image_ids[rows], np.round(poses, 3).reshape(len(rows), -1),
        round_like_python(gt.boxes[rows], 3), gt.ann_ids[rows], types.astype(np.int64)))


def _entries(image_ids: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray,
             ann_ids: np.ndarray, types: np.ndarray, rows: int = 8192) -> Iterator[list[dict]]:
    """:func:`synthesize_file`'s results entries, in chunks (numpy rows for the writer)."""
    img, ann = image_ids.tolist(), ann_ids.tolist()
    for s in range(0, len(img), rows):
        yield [
            {"image_id": img[i], "category_id": 1, "keypoints": keypoints[i], "score": 1.0,
             "bbox": boxes[i], "gt_ann_id": ann[i], "error_types": types[i]}
            for i in range(s, min(len(img), s + rows))
        ]
