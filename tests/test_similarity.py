"""KS, OKS, COCOeval's OKS matrix and OKS-NMS."""

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

from posefix.io import load_ground_truth, load_results
from posefix.similarity import keypoint_similarity, ks_distance, oks, oks_matrix, oks_nms
from posefix.spec import load_spec

COCO17 = load_spec("coco17")


@pytest.mark.parametrize("spec_name", ["coco17", "crowdpose14", "aic14", "mpii16"])
def test_ks_at_ks_distance_is_k(spec_name: str) -> None:
    sigmas = load_spec(spec_name).sigma_array
    K = len(sigmas)
    rng = np.random.default_rng(0)
    areas = np.array([50.0, 1024.0, 9216.0, 123456.0])
    for k in (0.1, 0.5, 0.85, 0.99):
        d = ks_distance(k, areas, sigmas)  # (4, K)
        assert d.shape == (4, K) and (np.diff(d, axis=0) > 0).all()  # larger person, farther
        angle = rng.uniform(0, 2 * np.pi, d.shape)
        gt = rng.uniform(0, 500, (4, K, 2))
        pred = gt + np.stack([d * np.cos(angle), d * np.sin(angle)], -1)
        np.testing.assert_allclose(keypoint_similarity(pred, gt, areas, sigmas), k, rtol=1e-12)
    assert (ks_distance(1.0, 100.0, sigmas) == 0).all()


def test_keypoint_similarity_broadcasts_and_oks_averages_labelled() -> None:
    sig = COCO17.sigma_array
    gt = np.zeros((3, 17, 3))
    pred = np.zeros((2, 1, 17, 2))
    pred[1, 0, :, 0] = ks_distance(0.5, 400.0, sig)
    ks = keypoint_similarity(pred, gt, np.full((1, 3), 400.0), sig)
    assert ks.shape == (2, 3, 17)
    np.testing.assert_allclose(ks[0], 1.0)
    np.testing.assert_allclose(ks[1], 0.5)
    vis = np.zeros((3, 17), dtype=bool)
    vis[0, :4] = True
    vis[1] = True
    pred2 = np.broadcast_to(pred[1, 0], (3, 17, 2)).copy()
    pred2[0, 0] = 0  # exact on one of the four labelled keypoints
    np.testing.assert_allclose(oks(pred2, gt, vis, 400.0, sig), [(1 + 3 * 0.5) / 4, 0.5, 0.0])


def coco_ious(gt_dataset: dict, results: list[dict], sigmas: np.ndarray) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt_dataset)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, res, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
    return ev.ious


@pytest.mark.parametrize("folder,ann,results", [
    ("coco", "test_coco.json", "blazepose_detboxes.json"),
    ("coco", "test_coco.json", "movenet_multipose.json"),
    ("ochuman", "test_ochuman.json", "movenet_multipose.json"),
    ("posetrack18", "annotations/test_posetrack18_val.json", "blazepose_gtboxes.json"),
])
def test_oks_matrix_equals_pycocotools_compute_oks(data_dir: Path, folder: str, ann: str,
                                                   results: str) -> None:
    gt = load_ground_truth(data_dir / folder / ann)
    dets = load_results(data_dir / folder / results, gt.spec)
    raw = json.loads((data_dir / folder / results).read_text())
    ious = coco_ious(gt.to_coco(), raw, gt.spec.sigma_array)
    compared = 0
    for img in gt.images:
        d = np.flatnonzero(dets.image_ids == img)
        g = gt.indices_of_image(img)
        if len(d) == 0 or len(g) == 0:
            continue
        d = d[np.argsort(-dets.scores[d], kind="mergesort")][:20]  # COCOeval's order
        ours = oks_matrix(dets.keypoints[d], gt.keypoints[g], gt.keypoints[g, :, 2] > 0,
                          gt.areas[g], gt.boxes[g], gt.spec.sigma_array)
        np.testing.assert_allclose(ours, ious[img, 1], rtol=0, atol=1e-12)
        compared += ours.size
    assert compared > 10


def test_oks_matrix_box_fallback_for_unlabelled_persons(coco_dir: Path) -> None:
    """COCO has persons with no labelled keypoint: OKS through their enlarged box."""
    gt = load_ground_truth(coco_dir / "test_coco.json")
    r = int(np.flatnonzero(gt.num_labelled == 0)[0])
    x, y, w, h = gt.boxes[r]
    inside = np.zeros((1, 17, 2))
    inside[..., 0], inside[..., 1] = x + w / 2, y + h / 2
    outside = inside + [3 * w, 0]
    m = oks_matrix(np.concatenate([inside, outside]), gt.keypoints[[r]],
                   np.zeros((1, 17), dtype=bool), gt.areas[[r]], gt.boxes[[r]],
                   gt.spec.sigma_array)
    assert m[0, 0] == 1.0 and m[1, 0] < 1.0
    assert oks_matrix(np.zeros((0, 17, 2)), gt.keypoints[:2], np.ones((2, 17), bool),
                      gt.areas[:2], gt.boxes[:2], gt.spec.sigma_array).shape == (0, 2)


def poses(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person A, a near-duplicate of A, person B far away, and a loose copy of A."""
    a = rng.uniform(100, 200, (17, 2))
    b = a + 400
    near = a + 0.5
    loose = a + ks_distance(0.6, 10000.0, COCO17.sigma_array)[:, None] * np.array([1.0, 0.0])
    kp = np.stack([near, a, b, loose])
    return kp, np.array([0.8, 0.9, 0.7, 0.6]), np.full(4, 10000.0)


def test_oks_nms_keeps_the_best_of_each_person() -> None:
    kp, scores, areas = poses(np.random.default_rng(1))
    keep = oks_nms(kp, scores, areas, COCO17.sigma_array, threshold=0.9)
    assert keep.tolist() == [1, 2, 3]  # the near-duplicate goes; descending score order
    # The loose copy (OKS 0.6 with A) goes once the threshold is below 0.6.
    assert oks_nms(kp, scores, areas, COCO17.sigma_array, threshold=0.5).tolist() == [1, 2]
    assert oks_nms(kp, scores, areas, COCO17.sigma_array, threshold=1.0).tolist() == [1, 0, 2, 3]
    assert oks_nms(kp[:0], scores[:0], areas[:0], COCO17.sigma_array).size == 0


def test_oks_nms_counts_only_confident_keypoints() -> None:
    kp, scores, areas = poses(np.random.default_rng(2))
    kp = kp[[1, 3]]
    scores, areas = scores[[1, 3]], areas[[1, 3]]
    kp[1, :8] = kp[0, :8]  # the loose copy agrees exactly on keypoints 0-7
    conf = np.zeros((2, 17))
    conf[:, :8] = 1.0
    assert oks_nms(kp, scores, areas, COCO17.sigma_array, threshold=0.9).tolist() == [0, 1]
    kept = oks_nms(kp, scores, areas, COCO17.sigma_array, threshold=0.9,
                   keypoint_scores=conf, min_keypoint_score=0.5)
    assert kept.tolist() == [0]
