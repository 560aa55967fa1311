"""Keypoint error diagnosis (Ronchi & Perona taxonomy): a hand-worked case and real data."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posefix.commands.analyze import analyze_files
from posefix.diagnosis import (
    analyze,
    classify_keypoints,
    fix_errors,
    format_report,
    overlap_counts,
)
from posefix.evaluate import evaluate
from posefix.io import Detections, GroundTruth, ImageInfo, load_ground_truth, load_results
from posefix.similarity import keypoint_similarity, ks_distance
from posefix.spec import load_spec
from posefix.taxonomy import ABSENT, GOOD, INVERSION, JITTER, MISS, SWAP

SPEC = load_spec("coco17")
# A standing person, keypoints relative to the box corner (COCO-17 order).
TEMPLATE = np.array([
    [50, 10], [45, 5], [55, 5], [40, 10], [60, 10], [30, 40], [70, 40], [20, 70], [80, 70],
    [15, 100], [85, 100], [38, 110], [62, 110], [36, 150], [64, 150], [35, 190], [65, 190],
], dtype=float)
LEYE, LEAR, LSHO, RSHO, LWRI, LANK = 1, 3, 5, 6, 9, 15


def person(dx: float, dy: float) -> np.ndarray:
    kp = np.zeros((17, 3))
    kp[:, :2] = TEMPLATE + [dx, dy]
    kp[:, 2] = 2
    return kp


def hand_case() -> tuple[GroundTruth, Detections]:
    """Image 1: person A at (100, 50), person B = A moved 30 px down (overlapping), person C
    far right. A's left ear is unlabelled. Detections: one for A with exactly one keypoint of
    each error type, a perfect one for B, a duplicate of A, and one in empty background."""
    a, b, c = person(100, 50), person(100, 80), person(400, 50)
    a[LEAR] = 0
    gt = GroundTruth(
        spec=SPEC, images={1: ImageInfo(1, "a.jpg", 640, 640)},
        image_ids=np.ones(3, dtype=np.int64), ann_ids=np.array([11, 12, 13]),
        keypoints=np.stack([a, b, c]),
        boxes=np.array([[100, 50, 100, 200], [100, 80, 100, 200], [400, 50, 100, 200]], float),
        areas=np.full(3, 10000.0), iscrowd=np.zeros(3, dtype=bool))
    det_a = a.copy()
    det_a[LEAR, :2] = [140, 60]  # unlabelled in the ground truth: no label
    # jitter: moved so that KS with its own keypoint is 0.7
    det_a[LEYE, 0] += ks_distance(0.7, 10000.0, SPEC.sigma_array)[LEYE]
    det_a[LSHO, :2] = a[RSHO, :2]  # inversion: on the same person's right shoulder
    det_a[LWRI, :2] = b[LWRI, :2]  # swap: on person B's left wrist
    det_a[LANK, 1] += 300  # miss: nowhere near anything
    dup = a.copy()
    dup[:, :2] += 3
    far = person(500, 400)
    kps = np.stack([det_a, b.copy(), dup, far])
    kps[..., 2] = 1
    dets = Detections(image_ids=np.ones(4, dtype=np.int64), keypoints=kps,
                      scores=np.array([0.9, 0.8, 0.5, 0.4]), boxes=np.full((4, 4), np.nan),
                      category_ids=np.ones(4, dtype=np.int64))
    return gt, dets


def test_hand_worked_example_has_one_keypoint_of_each_type() -> None:
    gt, dets = hand_case()
    d = classify_keypoints(gt, dets)
    order = np.argsort(d.det_index)
    assert d.det_index[order].tolist() == [0, 1] and d.gt_index[order].tolist() == [0, 1]
    labels_a = d.labels[order[0]]
    expected = np.full(17, GOOD)
    expected[[LEYE, LEAR, LSHO, LWRI, LANK]] = [JITTER, ABSENT, INVERSION, SWAP, MISS]
    np.testing.assert_array_equal(labels_a, expected)
    assert labels_a.dtype == np.int8
    assert d.ks[order[0], LEYE] == pytest.approx(0.7)
    assert np.isnan(d.ks[order[0], LEAR])
    assert (d.labels[order[1]] == GOOD).all()
    assert d.num_labelled[order].tolist() == [16, 17]
    assert d.num_overlap[order].tolist() == [1, 1]  # A and B overlap, C is apart
    assert d.unmatched_det_index.tolist() == [2, 3]
    assert d.background_det_index.tolist() == [3]  # 2 is a duplicate of A
    assert d.missed_gt_index.tolist() == [2]
    assert d.counts().tolist() == [16 + 17 - 4, 1, 1, 1, 1]
    assert d.swap_possible[order[0], LWRI] and not d.swap_possible[order[0], LEAR]


def test_own_keypoint_decides_before_other_candidates() -> None:
    """A keypoint with own KS in [0.5, 0.85) is jitter even when it sits exactly on another
    person's keypoint (coco-analyze's arg-max would call it a swap)."""
    gt, dets = hand_case()
    gt.keypoints[1, LWRI, :2] = gt.keypoints[0, LWRI, :2] + [0, 9]  # B's wrist near A's
    dets.keypoints[0, LWRI, :2] = gt.keypoints[1, LWRI, :2]
    d = classify_keypoints(gt, dets)
    row = int(np.flatnonzero(d.det_index == 0)[0])
    ks = keypoint_similarity(dets.keypoints[0], gt.keypoints[0], 10000.0, SPEC.sigma_array)
    assert 0.5 <= ks[LWRI] < 0.85
    assert d.labels[row, LWRI] == JITTER


def test_fix_errors_moves_only_the_chosen_types_onto_the_ground_truth() -> None:
    gt, dets = hand_case()
    d = classify_keypoints(gt, dets)
    fixed = fix_errors(gt, dets, d, ["swap", "miss"])
    np.testing.assert_array_equal(fixed.keypoints[0, [LWRI, LANK], :2],
                                  gt.keypoints[0, [LWRI, LANK], :2])
    same = np.ones(17, dtype=bool)
    same[[LWRI, LANK]] = False
    np.testing.assert_array_equal(fixed.keypoints[0, same], dets.keypoints[0, same])
    np.testing.assert_array_equal(fixed.keypoints[1:], dets.keypoints[1:])
    assert dets.keypoints[0, LANK, 1] != gt.keypoints[0, LANK, 1]  # input untouched


def test_overlap_counts_skip_crowds_and_unlabelled_persons() -> None:
    gt, _ = hand_case()
    assert overlap_counts(gt).tolist() == [1, 1, 0]
    gt.iscrowd[1] = True
    assert overlap_counts(gt).tolist() == [0, 1, 0]
    gt.iscrowd[1] = False
    gt.keypoints[0, :, 2] = 0  # A unlabelled: B no longer counts it, A still counts B
    assert overlap_counts(gt).tolist() == [1, 0, 0]


def pycoco_matches(gt: GroundTruth, results: list[dict], thr: float) -> set[tuple[int, int]]:
    """(result index, annotation id) pairs COCOeval matches at one OKS threshold."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt.to_coco()
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, res, "keypoints")
        ev.params.kpt_oks_sigmas = gt.spec.sigma_array
        ev.params.iouThrs = np.array([thr])
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
    pairs = set()
    for e in ev.evalImgs:
        if e is None:
            continue
        for dt_id, gt_id, ign in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0],
                                     strict=True):
            if gt_id > 0 and not ign:
                pairs.add((dt_id - 1, int(gt_id)))
    return pairs


@pytest.mark.parametrize("folder,ann,results", [
    ("coco", "test_coco.json", "blazepose_detboxes.json"),
    ("coco", "test_coco.json", "movenet_multipose.json"),
    ("ochuman", "test_ochuman.json", "blazepose_gtboxes.json"),
    ("ochuman", "test_ochuman.json", "movenet_multipose.json"),
    ("posetrack18", "annotations/test_posetrack18_val.json", "blazepose_gtboxes.json"),
])
def test_labels_on_real_results(data_dir: Path, folder: str, ann: str, results: str) -> None:
    gt = load_ground_truth(data_dir / folder / ann)
    raw = json.loads((data_dir / folder / results).read_text())
    dets = load_results(data_dir / folder / results, gt.spec)
    d = classify_keypoints(gt, dets)
    # The matching is COCOeval's at OKS 0.1.
    ours = {(int(i), int(gt.ann_ids[g])) for i, g in zip(d.det_index, d.gt_index, strict=True)}
    assert ours == pycoco_matches(gt, raw, 0.1) and len(ours) > 0
    # Every label follows from independently computed KS values.
    det, own = dets.keypoints[d.det_index], gt.keypoints[d.gt_index]
    area = gt.areas[d.gt_index]
    ks = keypoint_similarity(det, own, area, gt.spec.sigma_array)
    labelled = (own[..., 2] > 0) & gt.spec.used_mask
    np.testing.assert_array_equal(d.labels == ABSENT, ~labelled)
    np.testing.assert_array_equal(d.labels == GOOD, labelled & (ks >= 0.85))
    np.testing.assert_array_equal(d.labels == JITTER, labelled & (ks >= 0.5) & (ks < 0.85))
    partner = gt.spec.partner_index
    ks_inv = keypoint_similarity(det, own[:, np.maximum(partner, 0)], area, gt.spec.sigma_array)
    inv_ok = (partner >= 0) & labelled[:, np.maximum(partner, 0)] & (ks_inv >= 0.5)
    np.testing.assert_array_equal(d.labels == INVERSION, labelled & (ks < 0.5) & inv_ok)
    assert set(np.unique(d.labels)) <= {ABSENT, GOOD, JITTER, INVERSION, SWAP, MISS}
    if gt.spec.name == "posetrack17":
        assert (d.labels[:, list(gt.spec.ignore)] == ABSENT).all()
    np.testing.assert_array_equal(d.num_labelled, labelled.sum(1))


def test_swaps_found_in_occluded_crowds(data_dir: Path) -> None:
    d = classify_keypoints(
        load_ground_truth(data_dir / "ochuman" / "test_ochuman.json"),
        load_results(data_dir / "ochuman" / "blazepose_gtboxes.json", "coco17"))
    assert (d.labels == SWAP).sum() > 0 and (d.num_overlap > 0).any()


def test_fixing_every_error_of_jittered_ground_truth_gives_ap_one(coco_dir: Path) -> None:
    """Every labelled keypoint moved to KS 0.7 (a jitter): AP is low; fixing them all
    restores the ground truth."""
    gt = load_ground_truth(coco_dir / "test_coco.json")
    keep = gt.num_labelled > 0
    rng = np.random.default_rng(0)
    kp = gt.keypoints[keep].copy()
    dist = ks_distance(0.7, gt.areas[keep], gt.spec.sigma_array)
    angle = rng.uniform(0, 2 * np.pi, dist.shape)
    kp[..., 0] += dist * np.cos(angle)
    kp[..., 1] += dist * np.sin(angle)
    n = len(kp)
    dets = Detections(image_ids=gt.image_ids[keep], keypoints=kp, scores=rng.random(n),
                      boxes=np.full((n, 4), np.nan), category_ids=np.ones(n, dtype=np.int64))
    report = analyze(gt, dets)
    assert report["keypoints"]["rates"]["jitter"] == 1.0
    assert report["ap"]["AP"] < 0.6
    last = report["ap_if_fixed"]["cumulative"][-1]
    assert last["fixed"] == ["miss", "swap", "inversion", "jitter"]
    assert last["AP"] == pytest.approx(1.0, abs=1e-12)
    assert report["ap_if_fixed"]["alone"]["jitter"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert report["ap_if_fixed"]["alone"]["miss"]["gain"] == 0.0


def test_report_on_blazepose(coco_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fitted.yaml"
    report = analyze_files(coco_dir / "test_coco.json", coco_dir / "blazepose_gtboxes.json",
                           fit_profile_out=out)
    assert report["ap"]["AP"] == pytest.approx(evaluate(
        load_ground_truth(coco_dir / "test_coco.json"),
        load_results(coco_dir / "blazepose_gtboxes.json", "coco17"))["AP"])
    k = report["keypoints"]
    assert sum(k["counts"].values()) == k["labelled"] > 0
    assert sum(k["rates"].values()) == pytest.approx(1.0)
    assert sum(g["labelled"] for g in report["per_group"].values()) == k["labelled"]
    assert sum(p["counts"]["miss"] for p in report["per_keypoint"].values()) == k["counts"]["miss"]
    assert report["matched"] + report["unmatched_detections"] == report["num_detections"]
    assert report["matched"] + report["missed_ground_truth"] == report["num_ground_truth"]
    # Fixing errors never costs AP here, and fixing all helps the most.
    gains = [c["gain"] for c in report["ap_if_fixed"]["cumulative"]]
    assert gains[-1] > 0.2 and min(gains) >= 0
    assert report["profile"] == str(out) and out.is_file()
    from posefix.profile import load_profile

    assert load_profile(out).name
    text = format_report(report)
    for word in ("per keypoint", "per body group", "left_wrist", "upper_body", "jitter only",
                 "error profile written"):
        assert word in text
    json.dumps(report)  # plain data


def test_swap_with_the_partner_keypoint_of_another_person() -> None:
    gt, dets = hand_case()
    rwri = SPEC.partner_index[LWRI]
    dets.keypoints[1, rwri, :2] = gt.keypoints[0, LWRI, :2]  # B's right wrist on A's left
    d = classify_keypoints(gt, dets)
    assert d.labels[d.det_index == 1][0, rwri] == SWAP


def test_swap_uses_the_other_persons_area_and_needs_another_person() -> None:
    gt, dets = hand_case()
    gt.areas[1] = 2500.0  # B is smaller: KS 0.5 at 7.3 px for a wrist
    assert ks_distance(0.5, 2500.0, SPEC.sigma_array)[LWRI] == pytest.approx(7.3, abs=0.05)
    for shift, label in ((10.0, MISS), (5.0, SWAP)):
        dets.keypoints[0, LWRI, :2] = gt.keypoints[1, LWRI, :2] + [shift, 0]
        d = classify_keypoints(gt, dets)
        assert d.labels[d.det_index == 0][0, LWRI] == label
    alone = classify_keypoints(gt.subset(np.array([0])), dets.select(np.array([0])))
    assert alone.labels[0, LWRI] == MISS and not alone.swap_possible.any()
    assert alone.num_overlap.tolist() == [0]


def test_only_background_false_positives_are_removed_for_their_ap() -> None:
    gt, dets = hand_case()
    report = analyze(gt, dets)
    assert report["background_false_positives"] == 1 and report["duplicates"] == 1
    without = evaluate(gt, dets.select(np.array([0, 1, 2])))
    assert report["ap_if_fixed"]["background_false_positives"]["AP"] == without["AP"]
    assert report["ap_if_fixed"]["background_false_positives"]["gain"] >= 0


def test_nobody_to_find_makes_every_detection_background(coco_dir: Path) -> None:
    gt = load_ground_truth(coco_dir / "test_coco.json")
    dets = load_results(coco_dir / "blazepose_gtboxes.json", gt.spec)
    nobody = gt.subset(np.zeros(0, dtype=np.int64), image_ids=list(gt.images))
    report = analyze(nobody, dets)
    assert report["matched"] == 0 and report["background_false_positives"] == len(dets)
    assert report["ap"]["AP"] == -1.0 and report["keypoints"]["labelled"] == 0
    empty = analyze(gt, Detections.empty(17))
    assert empty["missed_ground_truth"] == empty["num_ground_truth"] == 12
    assert "missed persons 12" in format_report(empty)
