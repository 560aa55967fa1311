"""Tests that kill mutants which survived the rest of the suite (issue 32).

Each test pins a boundary or a formula that a one-token change of the code got past: the
mutant it kills is named in its docstring, and docs/mutation-testing.md records the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from posefix.config import ConfigError, ModelConfig, load_config
from posefix.decoding import Decoding
from posefix.diagnosis import analyze, classify_keypoints
from posefix.formats import read_poses
from posefix.geometry import box_iou, paired_box_iou
from posefix.heatmaps import bilinear_onehot
from posefix.io import Detections, GroundTruth, ImageInfo, convert_mpii
from posefix.similarity import keypoint_similarity, ks_distance, oks, oks_nms
from posefix.spec import load_spec
from posefix.taxonomy import ABSENT, GOOD, INVERSION, JITTER, KS_GOOD, MISS

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


def test_oks_nms_suppresses_only_above_the_threshold() -> None:
    """Kills: ``pair_oks >= threshold`` (the reference keeps OKS <= threshold)."""
    a = _person(100, 50)
    keep = oks_nms(np.stack([a, a]), np.array([0.9, 0.8]), np.full(2, 1e4), COCO.sigma_array,
                   threshold=1.0)  # identical poses: OKS exactly 1, not above 1
    assert keep.tolist() == [0, 1]
    assert oks_nms(np.stack([a, a]), np.array([0.9, 0.8]), np.full(2, 1e4), COCO.sigma_array,
                   threshold=0.999).tolist() == [0]


def test_oks_nms_counts_only_keypoints_scoring_above_the_minimum() -> None:
    """Kills: ``keypoint_scores >= min_keypoint_score`` (the reference's ``in_vis_thre`` is
    strict)."""
    a = _person(100, 50)
    b = a.copy()
    b[:5, :2] += 200  # the face far off; the 12 body joints identical
    scores = np.ones((2, 17))
    scores[:, :5] = 0.2  # exactly the minimum: not counted
    keep = oks_nms(np.stack([a, b]), np.array([0.9, 0.8]), np.full(2, 1e4), COCO.sigma_array,
                   threshold=0.9, keypoint_scores=scores, min_keypoint_score=0.2)
    assert keep.tolist() == [0]
    scores[:, :5] = 0.2001  # just above it: the face counts and the OKS drops to 12 / 17
    keep = oks_nms(np.stack([a, b]), np.array([0.9, 0.8]), np.full(2, 1e4), COCO.sigma_array,
                   threshold=0.9, keypoint_scores=scores, min_keypoint_score=0.2)
    assert keep.tolist() == [0, 1]


# ------------------------------------------------------------------ diagnosis
def test_background_false_positive_threshold_is_the_match_threshold() -> None:
    """Kills: background false positives at OKS < 0.5 instead of ``oks_threshold`` (0.1).

    A detection of person A shifted 25 px right and down has OKS 0.21 with B (which a
    better-scoring detection took) and 0.08 with A: a duplicate near B, not background."""
    a, b, c = _person(100, 50), _person(100, 80), _person(400, 50)
    gt = _image([a, b, c])
    dup = a.copy()
    dup[:, :2] += 3
    dets = _detections([a, b, dup, _person(500, 400), _person(125, 75)],
                       scores=[0.9, 0.8, 0.5, 0.4, 0.3])
    d = classify_keypoints(gt, dets)
    assert sorted(d.unmatched_det_index.tolist()) == [2, 3, 4]
    assert d.background_det_index.tolist() == [3]  # 2 and 4 are duplicates
    report = analyze(gt, dets)
    assert report["background_false_positives"] == 1 and report["duplicates"] == 2
    # at a threshold above its best OKS (0.21) the shifted one is background too
    assert sorted(classify_keypoints(gt, dets, oks_threshold=0.3).background_det_index) == [3, 4]


def _image(persons: list[np.ndarray]) -> GroundTruth:
    n = len(persons)
    kp = np.stack(persons)
    boxes = np.concatenate([kp[:, :, :2].min(1), np.ptp(kp[:, :, :2], axis=1)], 1)
    return GroundTruth(spec=COCO, images={1: ImageInfo(1, "a.jpg", 640, 640)},
                       image_ids=np.ones(n, dtype=np.int64), ann_ids=np.arange(1, n + 1),
                       keypoints=kp, boxes=boxes, areas=np.full(n, 10000.0),
                       iscrowd=np.zeros(n, dtype=bool))


def _detections(kps: list[np.ndarray], scores: list[float] | None = None) -> Detections:
    n = len(kps)
    kp = np.stack(kps)
    kp[..., 2] = 1
    return Detections(image_ids=np.ones(n, dtype=np.int64), keypoints=kp,
                      scores=np.linspace(0.9, 0.5, n) if scores is None else np.array(scores),
                      boxes=np.full((n, 4), np.nan),
                      category_ids=np.ones(n, dtype=np.int64))


def test_a_keypoint_at_exactly_ks_085_is_good() -> None:
    """Kills: ``ks > KS_GOOD`` (the module docstring, difference 2: KS == 0.85 is good
    here, where coco-analyze leaves it unlabelled)."""
    a = _person(-50, 50)  # the nose at x = 0, so that x steps finely enough
    det = a.copy()
    sig = COCO.sigma_array
    # move the nose right until the KS the diagnosis computes is exactly 0.85
    x = float(ks_distance(KS_GOOD, 1e4, sig)[0])
    for _ in range(10000):
        det[0, 0] = x
        ks = keypoint_similarity(det[None], a[None], np.array([1e4]), sig)[0, 0]
        if ks == KS_GOOD:
            break
        x = np.nextafter(x, np.inf if ks > KS_GOOD else -np.inf)
    assert ks == KS_GOOD
    d = classify_keypoints(_image([a]), _detections([det]))
    assert d.ks[0, 0] == KS_GOOD and d.labels[0, 0] == GOOD
    det[0, 0] = x + 1e-6  # a hair further: jitter
    assert classify_keypoints(_image([a]), _detections([det])).labels[0, 0] == JITTER


def test_an_unlabelled_partner_is_no_inversion_target() -> None:
    """Kills: an inversion onto the partner keypoint without checking that the partner is
    labelled. The ground truth keeps coordinates at its unlabelled left ear (v = 0), as
    some files do; a detected right ear there is a miss, not an inversion."""
    a = _person(100, 50)
    a[3, 2] = 0  # left ear unlabelled, its x, y kept
    det = a.copy()
    det[4, :2] = a[3, :2]  # right ear on the unlabelled left ear
    d = classify_keypoints(_image([a]), _detections([det]))
    assert d.labels[0, 3] == ABSENT and d.labels[0, 4] == MISS
    a[3, 2] = 2  # labelled: now it is an inversion
    assert classify_keypoints(_image([a]), _detections([det])).labels[0, 4] == INVERSION


# ------------------------------------------------------------------ geometry
def test_boxes_apart_on_one_axis_do_not_overlap() -> None:
    """Kills: ``np.abs(hi - lo)`` for the clipped overlap (boxes side by side overlap in y
    only, and a negative x overlap times a positive y overlap must not count)."""
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[3.0, 0.0, 2.0, 2.0], [0.0, 3.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]])
    np.testing.assert_allclose(box_iou(a, b), [[0.0, 0.0, 1 / 7]])
    np.testing.assert_allclose(paired_box_iou(a, b), [0.0, 0.0, 1 / 7])


# ------------------------------------------------------------------ the error gate's boundary
def test_decode_gate_refines_a_keypoint_whose_error_probability_equals_the_gate() -> None:
    """Kills: ``P(error) <= gate`` keeps the input (the convention: P >= gate refines)."""
    pose = np.array([[[3.0, 4.0, 1.0], [10.0, 20.0, 1.0], [40.0, 50.0, 1.0]]], np.float32)
    refined = np.array([25.5, 33.5], np.float32)
    coords = np.broadcast_to(refined, (1, 3, 2))
    error = np.array([[0.5, np.nextafter(np.float32(0.5), 0), np.nextafter(np.float32(0.5), 1)]],
                     np.float32)  # P(error) = 0.5 exactly, below, above
    out = Decoding(gate=0.5).place(coords, np.ones((1, 3)), error, pose)
    np.testing.assert_array_equal(out[0, 0], refined)
    np.testing.assert_array_equal(out[0, 1], pose[0, 1, :2])
    np.testing.assert_array_equal(out[0, 2], refined)


# ------------------------------------------------------------------ heatmaps
def test_bilinear_target_outside_the_map_is_clamped_onto_its_edge() -> None:
    """Kills: ``clamp(0, w)`` for ``clamp(0, w - 1)`` (a target past the last cell would
    lose its mass instead of sitting on the edge, as the docstring promises)."""
    h, w = 16, 12
    coords = torch.tensor([[[w + 3.0, 5.0], [4.0, h + 0.5], [-2.0, -1.0], [w - 0.5, 2.0]]])
    t = bilinear_onehot(coords, h, w)
    torch.testing.assert_close(t.sum(-1), torch.ones(1, 4))
    grid = t.reshape(1, 4, h, w)
    ex = (grid.sum(2) * torch.arange(float(w))).sum(-1)
    ey = (grid.sum(3) * torch.arange(float(h))).sum(-1)
    torch.testing.assert_close(torch.stack([ex, ey], -1),
                               torch.tensor([[[w - 1.0, 5.0], [4.0, h - 1.0], [0.0, 0.0],
                                              [w - 1.0, 2.0]]]))


# ------------------------------------------------------------------ config overrides
def test_override_value_keeps_every_equals_sign() -> None:
    """Kills: ``item.split("=")[:2]`` in place of ``item.split("=", 1)``."""
    cfg = load_config("tiny_cpu", ["run.out_dir=runs/lr=1e-3", "optim.lr=1e-3"])
    assert cfg.run.out_dir.endswith("runs/lr=1e-3")
    assert cfg.optim.lr == pytest.approx(1e-3)


def test_error_gate_of_one_is_valid() -> None:
    """Kills: ``0 <= error_gate < 1`` (the range is [0, 1], as the message says; a gate of 1
    refines only keypoints the head is certain about)."""
    cfg = ModelConfig(backbone="resnet18", error_head=True, error_gate=1.0)
    assert cfg.error_gate == 1.0
    assert load_config("tiny_cpu", ["model.error_head=true", "model.error_gate=1"]
                       ).model.error_gate == 1.0
    with pytest.raises(ConfigError, match="model.error_gate"):
        ModelConfig(backbone="resnet18", error_head=True, error_gate=1.001)


# ------------------------------------------------------------------ formats
def test_openpose_person_score_is_the_mean_of_the_detected_joints(tmp_path: Path) -> None:
    """Kills: the undetected joints (c = 0) counted in the person score's denominator."""
    flat = np.zeros((25, 3))
    flat[:, :2] = np.arange(50).reshape(25, 2)
    flat[[0, 2, 3, 4, 5, 6, 7, 9, 10, 11], 2] = 0.8  # 10 of the 17 COCO-17 joints detected
    path = tmp_path / "a_keypoints.json"
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": flat.ravel().tolist()}]}))
    dets = read_poses(path, COCO).detections
    assert (dets.keypoints[0, :, 2] > 0).sum() == 10
    assert dets.scores.tolist() == pytest.approx([0.8])


# ------------------------------------------------------------------ io
def test_mpii_joints_convert_to_cocos_labelled_and_visible(data_dir: Path) -> None:
    """Kills: ``v = 1`` for MPII's visible joints (COCO's 1 is "labelled, not visible"; an
    MPII ``joints_vis`` of 1 is a visible joint, COCO's 2)."""
    path = data_dir / "mpii" / "test_mpii.json"
    entries = json.loads(path.read_text())
    coco = convert_mpii(path)
    v = np.array([a["keypoints"][2::3] for a in coco["annotations"]])
    np.testing.assert_array_equal(v, 2 * np.array([e["joints_vis"] for e in entries]))
