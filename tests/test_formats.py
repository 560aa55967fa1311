"""Readers for what pose estimators write (posefix.formats): fixtures written here after each
tool's documented output (OpenPose --write_json, MMPoseInferencer, Ultralytics keypoints),
real-shaped and malformed; and posefix refine on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import posefix
from posefix.cli import main
from posefix.errors import InputError
from posefix.formats import FORMATS, read_poses, sniff_format, to_detections
from posefix.images import load_image_list
from posefix.spec import convert_layout, load_spec

SAMPLE = Path(posefix.__file__).parent / "assets" / "sample"
COCO = load_spec("coco17")


def _sample() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, str]]:
    """MoveNet's poses on the embedded sample: image id -> (N, 17, 3), scores, file name."""
    kps: dict[int, list] = {}
    scores: dict[int, list] = {}
    for d in json.loads((SAMPLE / "movenet.json").read_text()):
        kps.setdefault(d["image_id"], []).append(np.reshape(d["keypoints"], (17, 3)))
        scores.setdefault(d["image_id"], []).append(d["score"])
    names = {i: info.file_name for i, info in load_image_list(SAMPLE / "annotations.json").items()}
    return ({i: np.stack(v) for i, v in kps.items()},
            {i: np.array(v) for i, v in scores.items()}, names)


def _openpose_person(kp: np.ndarray, layout: str) -> dict:
    """One person as OpenPose writes it, from a COCO-17 pose: joints by name, the neck
    between the shoulders, the mid-hip between the hips, feet beside the ankles."""
    spec = load_spec(layout)
    out = convert_layout(kp[None], COCO, spec, zero_ignored=False)[0]
    out[:, 2] = np.where(out[:, 2] > 0, out[:, 2], 0)
    c = {n: kp[COCO.index(n)] for n in COCO.keypoints}
    extra = {"neck": (c["left_shoulder"] + c["right_shoulder"]) / 2,
             "mid_hip": (c["left_hip"] + c["right_hip"]) / 2}
    for side in ("left", "right"):
        for j, name in enumerate(("big_toe", "small_toe", "heel")):
            extra[f"{side}_{name}"] = c[f"{side}_ankle"] + [3 * j - 3, 8, 0]
    for name, value in extra.items():
        if name in spec.keypoints:
            out[spec.index(name)] = value
    return {"person_id": [-1], "pose_keypoints_2d": out.reshape(-1).round(3).tolist(),
            "face_keypoints_2d": [], "hand_left_keypoints_2d": [],
            "hand_right_keypoints_2d": [], "pose_keypoints_3d": [], "face_keypoints_3d": [],
            "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("layout", ["body25", "openpose18"])
def test_openpose_folder_maps_joints_by_name(tmp_path: Path, layout: str) -> None:
    kps, _, names = _sample()
    for i, kp in kps.items():
        _write(tmp_path / f"{Path(names[i]).stem}_keypoints.json",
               {"version": 1.3, "people": [_openpose_person(p, layout) for p in kp]})
    assert sniff_format(tmp_path) == "openpose"
    poses = read_poses(tmp_path, COCO)
    assert poses.format == "openpose" and sorted(poses.keys) == sorted(
        Path(n).stem for n in names.values())
    dets = to_detections(poses, load_image_list(SAMPLE / "annotations.json"))
    for i, kp in kps.items():
        got = dets.keypoints[dets.image_ids == i]
        np.testing.assert_allclose(got[..., :2] * (kp[..., 2:] > 0),
                                   kp[..., :2] * (kp[..., 2:] > 0), atol=1e-3)
        present = kp[..., 2] > 0
        want = (kp[..., 2] * present).sum(1) / present.sum(1)
        np.testing.assert_allclose(dets.scores[dets.image_ids == i], want, atol=1e-3)
    # the other way round: BODY_25's neck, mid-hip and feet have no COCO-17 counterpart
    body = load_spec(layout)
    back = convert_layout(dets.keypoints[:1], COCO, body, zero_ignored=False)
    for name in ("neck", "mid_hip", "left_heel"):
        if name in body.keypoints:
            assert not back[0, body.index(name)].any()


def test_malformed_openpose(tmp_path: Path) -> None:
    bad = _write(tmp_path / "a_keypoints.json", {"people": [{"pose_keypoints_2d": [1.0] * 20}]})
    with pytest.raises(InputError, match="20 values; BODY_25 has 75, COCO-18 has 54"):
        read_poses(bad, COCO)
    bad = _write(tmp_path / "b_keypoints.json", {"people": [{"face_keypoints_2d": []}]})
    with pytest.raises(InputError, match="pose_keypoints_2d"):
        read_poses(bad, COCO)


def test_mmpose_inferencer_outputs(tmp_path: Path) -> None:
    kps, _, names = _sample()
    ids = list(kps)

    def instances(kp: np.ndarray) -> list[dict]:
        return [{"keypoints": p[:, :2].tolist(), "keypoint_scores": p[:, 2].tolist(),
                 "bbox": [[10.0, 20.0, 110.0, 220.0]], "bbox_score": 0.9} for p in kp]

    for i in ids:  # pred_out_dir: one file per image, named after it
        _write(tmp_path / "preds" / f"{Path(names[i]).stem}.json", instances(kps[i]))
    _write(tmp_path / "preds" / "0000_nobody.json", [])  # an image without persons, first
    folder = read_poses(tmp_path / "preds", COCO)
    assert folder.format == "mmpose"
    dets = to_detections(folder, load_image_list(SAMPLE / "annotations.json"))
    np.testing.assert_allclose(dets.boxes[0], [10, 20, 100, 200])
    for i in ids:
        np.testing.assert_allclose(dets.keypoints[dets.image_ids == i], kps[i])
    # the inferencer's return value, keyed by position; a video's frames
    batch = read_poses(_write(tmp_path / "batch.json",
                              {"predictions": [instances(kps[i]) for i in ids]}), COCO)
    assert batch.keys == [0, 1, 2] and len(batch.detections) == sum(map(len, kps.values()))
    video = read_poses(_write(tmp_path / "video.json", [
        {"frame_id": f, "instances": instances(kps[i])} for f, i in enumerate(ids)]), COCO)
    assert video.format == "mmpose" and video.keys == [0, 1, 2]


def test_malformed_mmpose(tmp_path: Path) -> None:
    bad = _write(tmp_path / "x.json", [{"keypoints": [[1, 2]] * 16,
                                        "keypoint_scores": [0.5] * 16}])
    with pytest.raises(InputError, match=r"\(17, 2\)"):
        read_poses(bad, COCO)
    bad = _write(tmp_path / "y.json", {"predictions": [[{"keypoint_scores": [1]}]]})
    with pytest.raises(InputError, match="keypoints"):
        read_poses(bad, COCO)


def test_arrays_like_ultralytics(tmp_path: Path) -> None:
    kps, scores, names = _sample()
    # results[i].keypoints.data.tolist() per image: (N, 17, 3) x, y, confidence
    plain = read_poses(_write(tmp_path / "a.json", {names[i]: kps[i].tolist() for i in kps}),
                       COCO)
    assert plain.format == "arrays"
    dets = to_detections(plain, load_image_list(SAMPLE / "annotations.json"))
    for i in kps:
        np.testing.assert_allclose(dets.keypoints[dets.image_ids == i], kps[i])
    with_scores = read_poses(_write(tmp_path / "b.json", {
        str(i): {"keypoints": kps[i][..., :2].tolist(), "scores": scores[i].tolist()}
        for i in kps}), COCO)
    assert with_scores.keys == [str(i) for i in kps]  # image ids (or frame indices)
    dets = to_detections(with_scores, load_image_list(SAMPLE / "annotations.json"))
    assert list(dict.fromkeys(dets.image_ids.tolist())) == list(kps)
    np.testing.assert_allclose(with_scores.detections.scores,
                               np.concatenate([scores[i] for i in kps]))
    assert (with_scores.detections.keypoints[..., 2] == 1).all()


def test_malformed_arrays_and_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\(N, 17, 2 or 3\)"):
        read_poses(_write(tmp_path / "a.json", {"im.jpg": [[[1, 2, 3, 4]] * 17]}), COCO)
    with pytest.raises(InputError, match="must have 1 values"):
        read_poses(_write(tmp_path / "b.json", {"im.jpg": {"keypoints": [[[1, 2]] * 17],
                                                           "scores": [1, 2]}}), COCO)
    with pytest.raises(InputError, match="matches no pose format") as e:
        read_poses(_write(tmp_path / "c.json", {"version": 2}), COCO)
    assert "\n" not in str(e.value) and all(f"{name}:" in str(e.value) for name in FORMATS)


def test_refine_an_openpose_folder_without_an_image_list(tmp_path: Path) -> None:
    """Named by image: no --gt or --image-list; the same numbers as the COCO input."""
    kps, _, names = _sample()
    folder = tmp_path / "openpose"
    for i, kp in kps.items():
        _write(folder / f"{Path(names[i]).stem}_keypoints.json",
               {"version": 1.3, "people": [_openpose_person(p, "body25") for p in kp]})
    poses = read_poses(folder, COCO)
    coco = [{"image_id": next(i for i in names if Path(names[i]).stem == key),
             "category_id": 1, "keypoints": kp.reshape(-1).tolist(), "score": float(s)}
            for key, kp, s in zip([poses.keys[j] for j in poses.detections.image_ids],
                                  poses.detections.keypoints, poses.detections.scores,
                                  strict=True)]
    _write(tmp_path / "coco.json", coco)
    common = ["--images", str(SAMPLE), "--workers", "0", "--device", "cpu", "--json"]
    assert main(["refine", "--results", str(folder), "--out", str(tmp_path / "a.json"),
                 *common]) == 0
    assert main(["refine", "--results", str(tmp_path / "coco.json"), "--image-list",
                 str(SAMPLE / "annotations.json"), "--out", str(tmp_path / "b.json"),
                 *common]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert len(a) == len(b) == len(coco)
    np.testing.assert_allclose([d["keypoints"] for d in a], [d["keypoints"] for d in b])
    np.testing.assert_allclose([d["score"] for d in a], [d["score"] for d in b])
    assert main(["refine", "--results", str(tmp_path / "coco.json"), "--format", "arrays",
                 "--out", str(tmp_path / "c.json"), *common]) == 2
    # arrays keyed by file name in, the same arrays out (--out-format arrays)
    arrays = {names[i]: kps[i].tolist() for i in kps}
    _write(tmp_path / "arrays.json", arrays)
    assert main(["refine", "--results", str(tmp_path / "arrays.json"), "--out-format",
                 "arrays", "--out", str(tmp_path / "d.json"), "--error-gate", "0",
                 *common]) == 0
    d = json.loads((tmp_path / "d.json").read_text())
    assert list(d) == list(arrays)
    back = read_poses(tmp_path / "d.json", COCO)
    assert back.format == "arrays" and len(back.detections) == len(coco)
    assert not np.allclose(back.detections.keypoints, np.concatenate(list(kps.values())))
