"""Tests that kill mutants which survived the rest of the suite (issue 32).

Each test pins a boundary or a formula that a one-token change of the code got past: the
mutant it kills is named in its docstring, and docs/mutation-testing.md records the run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posefix.config import ModelConfig, load_config
from posefix.diagnosis import analyze, classify_keypoints
from posefix.fixes import FixOptions, fix_keypoints
from posefix.io import Detections, GroundTruth, ImageInfo
from posefix.model import build_model
from posefix.similarity import oks, oks_nms
from posefix.spec import load_spec
from posefix.taxonomy import GROSS

COCO = load_spec("coco17")
# A standing person, keypoints relative to the box corner (COCO-17 order).
TEMPLATE = np.array([
    [50, 10], [45, 5], [55, 5], [40, 10], [60, 10], [30, 40], [70, 40], [20, 70], [80, 70],
    [15, 100], [85, 100], [38, 110], [62, 110], [36, 150], [64, 150], [35, 190], [65, 190],
], dtype=float)


def _person(dx: float, dy: float) -> np.ndarray:
    kp = np.zeros((17, 3))
    kp[:, :2] = TEMPLATE + [dx, dy]
    kp[:, 2] = 2
    return kp


# ------------------------------------------------------------------ similarity.oks_nms
@pytest.mark.parametrize("areas", [[1e4, 400.0], [400.0, 1e4]])
def test_oks_nms_uses_the_mean_area_of_the_two_poses(areas: list[float]) -> None:
    """Kills: the other pose's area (``areas[None]``) or the kept pose's alone
    (``areas[:, None]``) in place of the mean of both."""
    a = _person(100, 50)
    b = a.copy()
    b[:, :2] += 6
    vis = np.ones(17, dtype=bool)
    sig = COCO.sigma_array
    # 6 px apart: OKS 0.58 at the mean area 5200, 0.03 at 400 and 0.71 at 1e4
    assert oks(a, b, vis, 5200.0, sig) > 0.5 > oks(a, b, vis, 400.0, sig)
    keep = oks_nms(np.stack([a, b]), np.array([0.9, 0.8]), np.array(areas), sig, threshold=0.5)
    assert keep.tolist() == [0]


# ------------------------------------------------------------------ diagnosis
def test_background_false_positive_threshold_is_the_match_threshold() -> None:
    """Kills: background false positives at OKS < 0.5 instead of ``oks_threshold`` (0.1).

    A detection of person A shifted 25 px right and down has OKS 0.21 with B (which a
    better-scoring detection took) and 0.08 with A: a duplicate near B, not background."""
    a, b, c = _person(100, 50), _person(100, 80), _person(400, 50)
    gt = GroundTruth(
        spec=COCO, images={1: ImageInfo(1, "a.jpg", 640, 640)},
        image_ids=np.ones(3, dtype=np.int64), ann_ids=np.array([11, 12, 13]),
        keypoints=np.stack([a, b, c]),
        boxes=np.array([[100, 50, 100, 200], [100, 80, 100, 200], [400, 50, 100, 200]], float),
        areas=np.full(3, 10000.0), iscrowd=np.zeros(3, dtype=bool))
    dup = a.copy()
    dup[:, :2] += 3
    shifted = _person(125, 75)
    kps = np.stack([a, b, dup, _person(500, 400), shifted])
    kps[..., 2] = 1
    dets = Detections(image_ids=np.ones(5, dtype=np.int64), keypoints=kps,
                      scores=np.array([0.9, 0.8, 0.5, 0.4, 0.3]), boxes=np.full((5, 4), np.nan),
                      category_ids=np.ones(5, dtype=np.int64))
    d = classify_keypoints(gt, dets)
    assert sorted(d.unmatched_det_index.tolist()) == [2, 3, 4]
    assert d.background_det_index.tolist() == [3]  # 2 and 4 are duplicates
    report = analyze(gt, dets)
    assert report["background_false_positives"] == 1 and report["duplicates"] == 2
    # at a threshold above its best OKS (0.21) the shifted one is background too
    assert sorted(classify_keypoints(gt, dets, oks_threshold=0.3).background_det_index) == [3, 4]


# ------------------------------------------------------------------ the error gate's boundary
def test_decode_gate_refines_a_keypoint_whose_error_probability_equals_the_gate() -> None:
    """Kills: ``P(error) <= gate`` keeps the input (the convention: P >= gate refines, as
    :func:`posefix.fixes.fix_keypoints` touches P(gross) >= gate)."""
    k = 3
    net = build_model(ModelConfig(backbone="resnet18", input_size=(64, 48), deconv_channels=16,
                                  error_head=True), k).eval()
    net.error_gate = 0.5
    logits = torch.zeros(1, k, 16, 12)
    logits[..., 8, 6] = 30.0  # every refined keypoint at cell (6, 8): pixel (25.5, 33.5)
    pose = torch.tensor([[[3.0, 4.0, 1.0], [10.0, 20.0, 1.0], [40.0, 50.0, 1.0]]])
    error_logits = torch.tensor([[0.0, -1e-3, 1e-3]])  # P(error) = 0.5 exactly, below, above
    assert torch.sigmoid(error_logits)[0, 0] == 0.5
    coords, _ = net.decode(logits, pose, error_logits)
    refined = torch.tensor([25.5, 33.5])
    torch.testing.assert_close(coords[0, 0], refined)
    torch.testing.assert_close(coords[0, 1], pose[0, 1, :2])
    torch.testing.assert_close(coords[0, 2], refined)


def test_fix_gate_touches_a_keypoint_whose_gross_probability_equals_the_gate() -> None:
    """Kills: ``P(gross) > gate`` in fix_keypoints (the same convention as the decode gate)."""
    inputs = _person(0, 0)[None]
    refined = inputs[..., :2] + 40.0
    # keypoint 0: P(gross) = 0.25 + 0.125 + 0.125 = 0.5, exact in binary; the others 0.25
    kinds = np.tile([0.75, 0.0, 0.125, 0.0625, 0.0625], (1, 17, 1))
    kinds[0, 0] = [0.5, 0.0, 0.25, 0.125, 0.125]
    assert kinds[0, 0, list(GROSS)].sum() == 0.5
    out = fix_keypoints(inputs, refined, kinds, np.array([1e4]), COCO,
                        FixOptions(gate=0.5, inversion="off", swap_ks=0.0, snap=0.0))
    coords = np.asarray(out.coords)
    np.testing.assert_array_equal(coords[0, 0], refined[0, 0])
    np.testing.assert_array_equal(coords[0, 1:], inputs[0, 1:, :2])


# ------------------------------------------------------------------ config overrides
def test_override_value_keeps_every_equals_sign() -> None:
    """Kills: ``item.split("=")[:2]`` in place of ``item.split("=", 1)``."""
    cfg = load_config("tiny_cpu", ["run.out_dir=runs/lr=1e-3", "optim.lr=1e-3"])
    assert cfg.run.out_dir.endswith("runs/lr=1e-3")
    assert cfg.optim.lr == pytest.approx(1e-3)
