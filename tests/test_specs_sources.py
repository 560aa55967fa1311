"""The built-in keypoint specs held to their external sources, not to themselves (issue 32).

Each expected joint order below is transcribed by hand from the source's own documentation,
in the source's own words, and translated to posefix's snake_case names by a rule; nothing
here is derived from ``src/posefix/specs/*.yaml``. Then the whole chain where one exists: an
OpenPose file read through :mod:`posefix.formats`, and the real annotation files of
``../shared/data`` read through :mod:`posefix.io` (their ``categories`` name the joints).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import Params

from posefix.formats import read_poses
from posefix.io import load_ground_truth
from posefix.spec import available_specs, load_spec

# OpenPose, doc/02_output.md "Keypoint Ordering": POSE_BODY_25_BODY_PARTS, ids 0-24.
OPENPOSE_BODY_25 = """Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist MidHip RHip
    RKnee RAnkle LHip LKnee LAnkle REye LEye REar LEar LBigToe LSmallToe LHeel RBigToe
    RSmallToe RHeel"""
# OpenPose, the same document: POSE_COCO_BODY_PARTS (its COCO model), ids 0-17.
OPENPOSE_COCO_18 = """Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist RHip RKnee
    RAnkle LHip LKnee LAnkle REye LEye REar LEar"""
# MPII Human Pose, annotation description: "id - joint id (0 - r ankle, ..., 15 - l wrist)".
MPII = """r ankle, r knee, r hip, l hip, l knee, l ankle, pelvis, thorax, upper neck, head top,
    r wrist, r elbow, r shoulder, l shoulder, l elbow, l wrist"""
# AI Challenger keypoint track: 1/right shoulder ... 14/neck.
AIC = """right shoulder, right elbow, right wrist, left shoulder, left elbow, left wrist,
    right hip, right knee, right ankle, left hip, left knee, left ankle, head top, neck"""
# MS COCO person_keypoints category "keypoints".
COCO = """nose, left_eye, right_eye, left_ear, right_ear, left_shoulder, right_shoulder,
    left_elbow, right_elbow, left_wrist, right_wrist, left_hip, right_hip, left_knee,
    right_knee, left_ankle, right_ankle"""
# CrowdPose annotation category "keypoints" (crowdposetools).
CROWDPOSE = """left_shoulder, right_shoulder, left_elbow, right_elbow, left_wrist, right_wrist,
    left_hip, right_hip, left_knee, right_knee, left_ankle, right_ankle, head, neck"""
# PoseTrack 2018 annotation category "keypoints": COCO's with head_bottom, head_top as 1, 2.
POSETRACK = """nose, head_bottom, head_top, left_ear, right_ear, left_shoulder, right_shoulder,
    left_elbow, right_elbow, left_wrist, right_wrist, left_hip, right_hip, left_knee,
    right_knee, left_ankle, right_ankle"""
# Leeds Sports Pose README (joints.mat, 14 joints in this order).
LSP = """Right ankle, Right knee, Right hip, Left hip, Left knee, Left ankle, Right wrist,
    Right elbow, Right shoulder, Left shoulder, Left elbow, Left wrist, Neck, Head top"""

# crowdposetools' cocoeval.py: sigmas = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07,
# .87, .87, .89, .89, .79, .79]) / 10.0
CROWDPOSE_SIGMAS = np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89,
                             .79, .79]) / 10.0
# AI Challenger's keypoint_eval.py: delta = 2 * np.array([...]) (the COCO form's sigmas).
AIC_SIGMAS = np.array([0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891,
                       0.01402144, 0.03909642, 0.03686941, 0.01981803, 0.03843971,
                       0.03412318, 0.02415081, 0.01291456, 0.01236173])


def _openpose_names(doc: str) -> list[str]:
    """``RBigToe`` -> ``right_big_toe``, ``MidHip`` -> ``mid_hip``, ``Nose`` -> ``nose``."""
    out = []
    for name in doc.split():
        side = ""
        if len(name) > 1 and name[0] in "RL" and name[1].isupper():
            side, name = {"R": "right_", "L": "left_"}[name[0]], name[1:]
        out.append(side + re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())
    return out


def _phrases(doc: str) -> list[str]:
    """``r ankle`` -> ``right_ankle``, ``Head top`` -> ``head_top``."""
    out = []
    for phrase in doc.split(","):
        words = phrase.strip().lower().split()
        words[0] = {"r": "right", "l": "left"}.get(words[0], words[0])
        out.append("_".join(words))
    return out


SOURCES = {
    "body25": _openpose_names(OPENPOSE_BODY_25),
    "openpose18": _openpose_names(OPENPOSE_COCO_18),
    "mpii16": _phrases(MPII),
    "aic14": _phrases(AIC),
    "coco17": _phrases(COCO),
    "ochuman17": _phrases(COCO),
    "crowdpose14": _phrases(CROWDPOSE),
    "posetrack17": _phrases(POSETRACK),
    "lsp14": _phrases(LSP),
}


def test_the_translation_rules() -> None:
    assert _openpose_names("Nose RBigToe LEar MidHip") == ["nose", "right_big_toe", "left_ear",
                                                           "mid_hip"]
    assert _phrases("r ankle, Head top, upper neck") == ["right_ankle", "head_top", "upper_neck"]
    assert [len(v) for v in SOURCES.values()] == [25, 18, 16, 14, 17, 17, 14, 17, 14]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_joint_order_is_the_sources(name: str) -> None:
    assert list(load_spec(name).keypoints) == SOURCES[name]


def test_every_builtin_spec_with_an_external_source_is_checked() -> None:
    # parse14 has no documented order of its own: its file's categories (below) are its source
    assert set(available_specs()) == set(SOURCES) | {"parse14"}


@pytest.mark.parametrize("name", sorted(set(SOURCES) | {"parse14"}))
def test_flip_pairs_are_every_left_right_pair_by_name(name: str) -> None:
    spec = load_spec(name)
    names = spec.keypoints
    want = {frozenset((n, "right_" + n[5:])) for n in names
            if n.startswith("left_") and "right_" + n[5:] in names}
    got = {frozenset((names[i], names[j])) for i, j in spec.flip_pairs}
    assert got == want and len(spec.flip_pairs) == len(want)


@pytest.mark.parametrize("name", sorted(set(SOURCES) | {"parse14"}))
def test_joints_named_as_cocos_have_cocos_sigma(name: str) -> None:
    """COCO's sigmas come from pycocotools itself; every layout but AI Challenger's (which
    publishes its own) uses them for the joints it shares with COCO by name."""
    coco_sigma = dict(zip(SOURCES["coco17"], Params(iouType="keypoints").kpt_oks_sigmas,
                          strict=True))
    spec = load_spec(name)
    shared = [n for n in spec.keypoints if n in coco_sigma]
    assert len(shared) >= 12
    got = [spec.sigmas[spec.index(n)] for n in shared]
    if name == "aic14":
        np.testing.assert_allclose(spec.sigma_array, AIC_SIGMAS, rtol=0, atol=1e-9)
        return
    np.testing.assert_allclose(got, [coco_sigma[n] for n in shared], rtol=0, atol=1e-9)
    if name == "crowdpose14":
        np.testing.assert_allclose(spec.sigma_array, CROWDPOSE_SIGMAS, rtol=0, atol=1e-9)


# ------------------------------------------------------------------ OpenPose, the whole chain
@pytest.mark.parametrize(("joints", "coco_x"), [
    # COCO-17's nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles (left before
    # right) at their OpenPose ids, read off the documented orders above by hand
    (25, [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]),
    (18, [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]),
])
def test_openpose_file_reads_into_coco17_by_the_documented_order(
        tmp_path: Path, joints: int, coco_x: list[int]) -> None:
    """An OpenPose ``--write_json`` file where joint j has x = j, y = 100 + j."""
    flat = [v for j in range(joints) for v in (float(j), 100.0 + j, 0.9)]
    path = tmp_path / "frame_000000000000_keypoints.json"
    path.write_text(json.dumps({"version": 1.3, "people": [{
        "person_id": [-1], "pose_keypoints_2d": flat, "face_keypoints_2d": [],
        "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": []}]}))
    poses = read_poses(path, "coco17")
    assert poses.format == "openpose"
    kp = poses.detections.keypoints[0]
    assert kp[:, 0].tolist() == coco_x
    assert kp[:, 1].tolist() == [100.0 + x for x in coco_x]


# ------------------------------------------------------------------ the real annotation files
def _file(request: pytest.FixtureRequest, rel: str) -> Path:
    """A real annotation file: the small sets from ``tests/data``, LSP, PARSE and COCO train
    from ``../shared/data`` (skipped without it, as the ``shared_data`` fixture says)."""
    small = request.getfixturevalue("data_dir") / rel
    return small if small.exists() else request.getfixturevalue("shared_data") / rel


@pytest.mark.parametrize(("rel", "name"), [
    ("coco/test_coco.json", "coco17"),
    ("coco-train/person_keypoints.json", "coco17"),
    ("ochuman/test_ochuman.json", "ochuman17"),
    ("crowdpose/test_crowdpose.json", "crowdpose14"),
    ("posetrack18/annotations/test_posetrack18_val.json", "posetrack17"),
    ("aic/test_aic.json", "aic14"),
    ("lsp/lsp14.json", "lsp14"),
    ("parse/parse14.json", "parse14"),
])
def test_real_files_name_the_specs_joints(request: pytest.FixtureRequest, rel: str,
                                          name: str) -> None:
    path = _file(request, rel)
    cat = json.loads(path.read_text())["categories"][0]
    spec = load_spec(name)
    assert [n.lower().replace(" ", "_") for n in cat["keypoints"]] == list(spec.keypoints)
    assert list(load_ground_truth(path).spec.keypoints) == list(spec.keypoints)
    if name in ("coco17", "ochuman17", "aic14", "lsp14", "parse14"):  # a skeleton of its own
        want = {frozenset((i - 1, j - 1)) for i, j in cat["skeleton"]}
        assert {frozenset(p) for p in spec.skeleton} == want


def test_posetrack_ears_are_never_labelled_and_ignored(data_dir: Path) -> None:
    gt = load_ground_truth(data_dir / "posetrack18/annotations/test_posetrack18_val.json")
    ears = [gt.spec.index("left_ear"), gt.spec.index("right_ear")]
    assert sorted(gt.spec.ignore) == sorted(ears)
    assert not (gt.keypoints[:, ears, 2] > 0).any()
    assert (gt.keypoints[:, gt.spec.index("head_top"), 2] > 0).any()


@pytest.mark.parametrize(("rel", "column"), [
    # MPII (mmpose's list form: joints by MPII id, no names), every person upright
    ("mpii/test_mpii.json", ["head_top", "upper_neck", "thorax", "pelvis"]),
    ("aic/test_aic.json", ["head_top", "neck", "right_hip"]),
])
def test_real_upright_persons_stack_head_to_hip(data_dir: Path, rel: str,
                                                column: list[str]) -> None:
    """Joints by position on real persons: the head top above the neck above the hips (image
    y grows downwards), which a shifted or swapped joint order would break."""
    gt = load_ground_truth(data_dir / rel)
    idx = [gt.spec.index(n) for n in column]
    kp = gt.keypoints[:, idx]
    labelled = (kp[..., 2] > 0).all(-1)
    assert labelled.sum() >= 5
    assert (np.diff(kp[labelled][..., 1], axis=-1) > 0).all()
