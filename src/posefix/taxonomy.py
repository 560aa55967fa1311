"""The keypoint error taxonomy of Ronchi & Perona (ICCV 2017), shared by synthesis and diagnosis.

Every keypoint of a matched detection is one of five types; the integer codes below are
what arrays of labels hold. ``ABSENT`` marks keypoints that are not labelled in the
ground truth (or not present in a synthesized pose).
"""

from __future__ import annotations

__all__ = ["ABSENT", "ERROR_TYPES", "GOOD", "GROSS", "INVERSION", "JITTER", "KS_GOOD", "KS_JITTER",
           "KS_MISS", "MISS", "SWAP"]

GOOD, JITTER, INVERSION, SWAP, MISS = 0, 1, 2, 3, 4
ABSENT = -1
ERROR_TYPES: tuple[str, ...] = ("good", "jitter", "inversion", "swap", "miss")
#: The gross errors (KS < 0.5 with the ground truth), which the error head predicts.
GROSS: tuple[int, ...] = (INVERSION, SWAP, MISS)

# KS thresholds: good >= 0.85 > jitter >= 0.5 > (inversion | swap | miss); 0.1 bounds misses
# in synthesis.
KS_GOOD = 0.85
KS_JITTER = 0.5
KS_MISS = 0.1
