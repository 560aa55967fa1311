"""COCO keypoint annotations and results, MPII conversion: the names of
:mod:`posefix.groundtruth`, :mod:`posefix.results`, :mod:`posefix.detections`,
:mod:`posefix.mpii`, :mod:`posefix.imagepaths` and :mod:`posefix.fields` in one place, as
they were before those modules were split from this one (import from them in new code).
"""

from __future__ import annotations

from .detections import Detections, same_image_pairs, write_results
from .fields import MAX_AREA, MAX_COORDINATE, check_numbers
from .groundtruth import GroundTruth, images_of_split, load_ground_truth
from .imagepaths import ImageInfo, resolve_image_path
from .mpii import convert_mpii
from .results import keep_known, load_results

__all__ = [
    "MAX_AREA",
    "MAX_COORDINATE",
    "Detections",
    "GroundTruth",
    "ImageInfo",
    "check_numbers",
    "convert_mpii",
    "images_of_split",
    "keep_known",
    "load_ground_truth",
    "load_results",
    "resolve_image_path",
    "same_image_pairs",
    "write_results",
]
