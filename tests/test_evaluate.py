"""posefix.evaluate against pycocotools' COCOeval on real data and on many perturbed results."""

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

from posefix.commands.evaluate import evaluate_files
from posefix.errors import InputError
from posefix.evaluate import (
    STAT_NAMES,
    coco_oks,
    evaluate,
    format_stats,
    match_detections,
)
from posefix.io import Detections, GroundTruth, load_ground_truth, load_results
from posefix.similarity import oks_matrix

# dataset folder -> (annotation file, real results files in it)
DATASETS = {
    "coco": ("test_coco.json",
             ["blazepose_gtboxes.json", "blazepose_detboxes.json", "movenet_multipose.json"]),
    "ochuman": ("test_ochuman.json", ["blazepose_gtboxes.json", "movenet_multipose.json"]),
    "posetrack18": ("annotations/test_posetrack18_val.json",
                    ["blazepose_gtboxes.json", "movenet_multipose.json"]),
    "crowdpose": ("test_crowdpose.json", []),
    "aic": ("test_aic.json", []),
}


def pycoco_stats(gt_dataset: dict, results: list[dict], sigmas: np.ndarray) -> np.ndarray:
    """pycocotools' ten keypoint statistics (quietly)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt_dataset)
        coco.createIndex()
        res = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, res, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def ours(gt: GroundTruth, results: list[dict], tmp_path: Path) -> np.ndarray:
    """Our statistics on the same results, read back through the validating loader."""
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    stats = evaluate(gt, load_results(path, gt.spec))
    assert list(stats) == list(STAT_NAMES)
    return np.array([stats[k] for k in STAT_NAMES])


def perturbed_results(gt: GroundTruth, rng: np.random.Generator) -> list[dict]:
    """Results made from ground truth: noise of several scales, flips, duplicates, drops,
    hallucinated persons, repeated scores (ties), shuffled order."""
    K = gt.spec.num_keypoints
    out = []
    for r in range(len(gt)):
        if rng.random() < 0.2:
            continue
        for copy_i in range(1 + int(rng.random() < 0.3)):
            kp = gt.keypoints[r].copy()
            scale = np.sqrt(max(gt.areas[r], 1.0)) * rng.choice([0.01, 0.05, 0.1, 0.3])
            kp[:, :2] += rng.normal(0, scale * (1 + 3 * copy_i), (K, 2))
            if rng.random() < 0.2:
                kp[:, :2] = kp[gt.spec.flip_index, :2]
            kp[:, 2] = rng.random(K)
            out.append({"image_id": int(gt.image_ids[r]), "category_id": 1,
                        "keypoints": np.round(kp, 3).ravel().tolist(),
                        "score": float(rng.choice([0.5, 0.9, rng.random()]))})
    ids = list(gt.images)
    for _ in range(int(rng.integers(0, 4))):
        kp = np.zeros((K, 3))
        kp[:, :2] = rng.random((K, 2)) * 300
        out.append({"image_id": int(rng.choice(ids)), "category_id": 1,
                    "keypoints": np.round(kp, 3).ravel().tolist(), "score": float(rng.random())})
    rng.shuffle(out)
    return out


def gt_path(data_dir: Path, name: str) -> Path:
    return data_dir / name / DATASETS[name][0]


@pytest.mark.parametrize("name,results", [(n, f) for n, (_, fs) in DATASETS.items() for f in fs])
def test_real_results_match_pycocotools(data_dir: Path, tmp_path: Path, name: str,
                                        results: str) -> None:
    gt = load_ground_truth(gt_path(data_dir, name))
    res = json.loads((data_dir / name / results).read_text())
    ref = pycoco_stats(gt.to_coco(), res, gt.spec.sigma_array)
    np.testing.assert_allclose(ours(gt, res, tmp_path), ref, rtol=0, atol=1e-9)


def test_raw_coco_file_matches_too(coco_dir: Path, tmp_path: Path) -> None:
    """The annotation file as pycocotools reads it (own areas, num_keypoints) gives the same."""
    raw = json.loads((coco_dir / "test_coco.json").read_text())
    gt = load_ground_truth(coco_dir / "test_coco.json")
    res = json.loads((coco_dir / "blazepose_detboxes.json").read_text())
    np.testing.assert_allclose(ours(gt, res, tmp_path),
                               pycoco_stats(raw, res, gt.spec.sigma_array), rtol=0, atol=1e-9)


def test_blazepose_on_coco_is_53_2(coco_dir: Path) -> None:
    stats = evaluate_files(coco_dir / "test_coco.json", coco_dir / "blazepose_gtboxes.json")
    assert round(stats["AP"], 3) == 0.532
    assert stats["num_detections"] == 10 and stats["num_ground_truth"] == 12


@pytest.mark.parametrize("name", list(DATASETS))
def test_perturbed_results_match_pycocotools(data_dir: Path, tmp_path: Path,
                                             name: str) -> None:
    gt = load_ground_truth(gt_path(data_dir, name))
    dataset = gt.to_coco()
    rng = np.random.default_rng(sum(map(ord, name)))
    aps = []
    for _ in range(40):
        res = perturbed_results(gt, rng)
        if not res:
            continue
        ref = pycoco_stats(dataset, res, gt.spec.sigma_array)
        np.testing.assert_allclose(ours(gt, res, tmp_path), ref, rtol=0, atol=1e-9)
        aps.append(ref[0])
    assert len(aps) > 30 and np.ptp(aps) > 0.1  # the cases differ


def synthetic_case(rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """Ground truth and results exercising COCOeval's corner cases: crowds, persons without
    keypoints (box fallback), an annotation id 0, areas on range edges, images without
    persons, more than 20 detections per image, tied scores, boxes in the results
    (loadRes's bbox branch), another category."""
    names = load_ground_truth_spec_names()
    images, anns = [], []
    next_id = int(rng.integers(0, 2))  # sometimes an annotation has id 0
    for im in range(int(rng.integers(1, 5))):
        images.append({"id": im + 7, "file_name": f"{im}.jpg", "width": 640, "height": 480})
        for _ in range(int(rng.integers(0, 8))):
            c = rng.random(2) * 400
            s = float(rng.choice([10, 40, 80, 150]))
            kp = np.zeros((17, 3))
            kp[:, :2] = c + rng.normal(0, s / 3, (17, 2))
            kp[:, 2] = rng.choice([0, 1, 2], 17, p=[0.3, 0.2, 0.5])
            if rng.random() < 0.15:
                kp[:, 2] = 0
            kp[kp[:, 2] == 0, :2] = 0
            area = float(s * s * rng.choice([0.5, 1.0, 1.5]))
            if rng.random() < 0.1:
                area = float(rng.choice([32.0 ** 2, 96.0 ** 2, 0.0]))
            anns.append({"id": next_id, "image_id": im + 7, "category_id": 1,
                         "iscrowd": int(rng.random() < 0.1),
                         "keypoints": np.round(kp, 2).ravel().tolist(),
                         "num_keypoints": int((kp[:, 2] > 0).sum()),
                         "bbox": [float(c[0] - s / 2), float(c[1] - s / 2), s, 1.5 * s],
                         "area": area})
            next_id += 1
    results = []
    for a in anns:
        for _ in range(int(rng.integers(0, 4))):
            kp = np.array(a["keypoints"]).reshape(17, 3)
            kp[:, :2] += rng.normal(0, rng.choice([1, 5, 20]), (17, 2))
            kp[:, 2] = 1
            results.append({"image_id": a["image_id"], "category_id": int(rng.choice([1] * 4 + [2])),
                            "keypoints": np.round(kp, 2).ravel().tolist(),
                            "score": float(rng.choice([0.5, 0.9, 1.0, 0.0, rng.random()]))})
    for _ in range(int(rng.integers(0, 30))):
        kp = np.zeros((17, 3))
        kp[:, :2] = rng.random(2) * 400 + rng.normal(0, 20, (17, 2))
        results.append({"image_id": int(rng.choice([i["id"] for i in images])),
                        "category_id": 1, "keypoints": np.round(kp, 2).ravel().tolist(),
                        "score": float(rng.choice([0.5, rng.random()]))})
    rng.shuffle(results)
    if rng.random() < 0.3:
        for r in results:
            k = np.array(r["keypoints"]).reshape(17, 3)[:, :2]
            w, h = k.max(0) - k.min(0)
            r["bbox"] = [float(k[:, 0].min()), float(k[:, 1].min()),
                         float(w * rng.choice([0.5, 1, 2])), float(h)]
    cats = [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}]
    return {"images": images, "annotations": anns, "categories": cats}, results


def load_ground_truth_spec_names() -> list[str]:
    from posefix.spec import load_spec

    return list(load_spec("coco17").keypoints)


def test_corner_cases_match_pycocotools(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    runs = 0
    for _ in range(150):
        dataset, results = synthetic_case(rng)
        if not dataset["annotations"] or not results:
            continue
        (tmp_path / "gt.json").write_text(json.dumps(dataset))
        gt = load_ground_truth(tmp_path / "gt.json")
        ref = pycoco_stats(dataset, results, gt.spec.sigma_array)
        np.testing.assert_allclose(ours(gt, results, tmp_path), ref, rtol=0, atol=1e-9)
        runs += 1
    assert runs > 100


def one_image_gt(ann_id: int = 1, n: int = 1) -> GroundTruth:
    """``n`` identical large persons in one image."""
    from posefix.io import ImageInfo
    from posefix.spec import load_spec

    spec = load_spec("coco17")
    kp = np.zeros((n, 17, 3))
    kp[:, :, 0] = np.linspace(100, 200, 17)
    kp[:, :, 1] = np.linspace(100, 300, 17)
    kp[:, :, 2] = 2
    return GroundTruth(
        spec=spec, images={1: ImageInfo(1, "a.jpg", 640, 480)},
        image_ids=np.ones(n, dtype=np.int64), ann_ids=np.arange(ann_id, ann_id + n),
        keypoints=kp, boxes=np.tile([100.0, 100.0, 100.0, 200.0], (n, 1)),
        areas=np.full(n, 20000.0), iscrowd=np.zeros(n, dtype=bool))


def dets_of(kp: np.ndarray, scores: np.ndarray, image_id: int = 1) -> Detections:
    m = len(scores)
    return Detections(image_ids=np.full(m, image_id, dtype=np.int64), keypoints=kp,
                      scores=np.asarray(scores, dtype=float), boxes=np.full((m, 4), np.nan),
                      category_ids=np.ones(m, dtype=np.int64))


def test_perfect_results_score_one_and_empty_results_zero() -> None:
    gt = one_image_gt(n=2)
    gt.keypoints[1, :, 0] += 250
    gt.boxes[1, 0] += 250
    perfect = evaluate(gt, dets_of(gt.keypoints.copy(), [0.9, 0.8]))
    assert all(perfect[k] == 1.0 for k in ("AP", "AP50", "AP75", "APl", "AR", "ARl"))
    assert perfect["APm"] == -1.0 and perfect["ARm"] == -1.0  # no medium person: -1
    empty = evaluate(gt, Detections.empty(17))
    assert empty["AP"] == 0.0 and empty["AR"] == 0.0


def test_only_the_20_best_detections_of_an_image_count() -> None:
    gt = one_image_gt()
    far = gt.keypoints.copy()
    far[..., :2] += 500
    kp = np.concatenate([np.repeat(far, 20, axis=0), gt.keypoints])
    assert evaluate(gt, dets_of(kp, [0.9] * 20 + [0.5]))["AR"] == 0.0
    assert evaluate(gt, dets_of(kp, [0.9] * 19 + [0.1, 0.5]))["AR"] == 1.0


def test_a_match_to_annotation_id_0_counts_as_a_false_positive() -> None:
    """COCOeval keeps matches as annotation ids and tests them for truth."""
    for ann_id, expected in ((0, 0.0), (5, 1.0)):
        gt = one_image_gt(ann_id=ann_id)
        dets = dets_of(gt.keypoints.copy(), [1.0])
        ap = evaluate(gt, dets)["AP"]
        assert ap == pytest.approx(expected, abs=1e-12)
        assert ap == pycoco_stats(gt.to_coco(), dets.to_json(), gt.spec.sigma_array)[0]


def test_coco_oks_equals_oks_matrix(coco_dir: Path) -> None:
    gt = load_ground_truth(coco_dir / "test_coco.json")
    dets = load_results(coco_dir / "movenet_multipose.json", gt.spec)
    img = int(gt.image_ids[0])
    g = gt.indices_of_image(img)
    d = np.flatnonzero(dets.image_ids == img)
    full = oks_matrix(dets.keypoints[d], gt.keypoints[g], gt.keypoints[g, :, 2] > 0,
                      gt.areas[g], gt.boxes[g], gt.spec.sigma_array)
    dd, gg = np.meshgrid(d, g, indexing="ij")
    ours_ = coco_oks(dets.keypoints[dd.ravel()], gt.keypoints[gg.ravel()],
                     gt.boxes[gg.ravel()], gt.areas[gg.ravel()], gt.spec.sigma_array)
    np.testing.assert_allclose(ours_.reshape(full.shape), full, rtol=0, atol=1e-12)


def test_match_detections_skips_other_categories_and_unknown_images(coco_dir: Path) -> None:
    gt = load_ground_truth(coco_dir / "test_coco.json")
    dets = load_results(coco_dir / "blazepose_gtboxes.json", gt.spec)
    dets.category_ids[0] = 2
    dets.image_ids[1] = 123456789
    mt = match_detections(gt, dets)
    assert mt.num_other == 2
    assert 0 not in mt.det_rows and 1 not in mt.det_rows and len(mt.det_rows) == len(dets) - 2


def test_evaluate_files_unknown_image_ids(coco_dir: Path, tmp_path: Path) -> None:
    res = json.loads((coco_dir / "blazepose_gtboxes.json").read_text())
    res[3]["image_id"] = 999999999
    path = tmp_path / "res.json"
    path.write_text(json.dumps(res))
    with pytest.warns(UserWarning, match="skipped 1 detection"):
        stats = evaluate_files(coco_dir / "test_coco.json", path)
    assert stats["skipped_unknown_image"] == 1 and stats["num_detections"] == len(res) - 1
    with pytest.raises(InputError) as e:
        evaluate_files(coco_dir / "test_coco.json", path, strict=True)
    msg = str(e.value)
    assert str(path) in msg and "entry 3" in msg and "'image_id'" in msg


def test_format_stats_lists_every_statistic(coco_dir: Path) -> None:
    stats = evaluate_files(coco_dir / "test_coco.json", coco_dir / "movenet_multipose.json")
    text = format_stats(stats)
    for key in STAT_NAMES:
        assert f"\n{key} " in text
    assert f"{stats['AP']:.3f}" in text and "movenet_multipose.json" in text


def test_oks_exactly_at_a_threshold_matches() -> None:
    """OKS (1 + 0) / 2 = 0.5 exactly: a match at .50 (>=), not at .55."""
    gt = one_image_gt()
    gt.keypoints[0, 2:, 2] = 0  # two labelled keypoints
    kp = gt.keypoints.copy()
    kp[0, 1, :2] += 1e4  # KS 0 for the second
    dets = dets_of(kp, [1.0])
    stats = evaluate(gt, dets)
    assert stats["AR50"] == 1.0 and stats["AR75"] == 0.0 and stats["AR"] == pytest.approx(0.1)
    ref = pycoco_stats(gt.to_coco(), dets.to_json(), gt.spec.sigma_array)
    np.testing.assert_array_equal([stats[k] for k in STAT_NAMES], ref)


def test_no_person_to_find_gives_minus_one_as_pycocotools(coco_dir: Path) -> None:
    gt = load_ground_truth(coco_dir / "test_coco.json")
    res = json.loads((coco_dir / "blazepose_gtboxes.json").read_text())
    dets = load_results(coco_dir / "blazepose_gtboxes.json", gt.spec)
    for rows in (np.zeros(0, dtype=np.int64), np.flatnonzero(gt.num_labelled == 0)):
        sub = gt.subset(rows, image_ids=list(gt.images))  # nobody, or only unlabelled persons
        stats = evaluate(sub, dets)
        assert set(stats.values()) == {-1.0}
        ref = pycoco_stats(sub.to_coco(), res, gt.spec.sigma_array)
        np.testing.assert_array_equal([stats[k] for k in STAT_NAMES], ref)
    assert set(evaluate(gt.subset(np.zeros(0, dtype=np.int64), image_ids=[]),
                        Detections.empty(17)).values()) == {-1.0}
