"""RefinedPoses (issue 29): per-person access, repr, to_coco/save with the writers of
``posefix refine``, and plot with posefix.visualize's drawing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import posefix
from posefix.io import write_results
from posefix.refiner import RefinedPerson, RefinedPoses
from posefix.spec import load_spec
from posefix.visualize import LEFT_COLOR, MOVE_COLOR, REMOVED_COLOR, RIGHT_COLOR

SPEC = load_spec("coco17")
H, W = 240, 320


def _pose(cx: float, cy: float) -> np.ndarray:
    """A (17, 3) standing figure around (cx, cy), every keypoint present."""
    rng = np.random.default_rng(int(cx))
    xy = np.c_[cx + rng.uniform(-24, 24, 17), cy + np.linspace(-80, 80, 17)]
    return np.c_[xy, np.full(17, 0.9)]


def _poses(image: np.ndarray | None = None, **kw: object) -> RefinedPoses:
    """Three persons: the first and third kept and refined (the first with one keypoint
    moved 20 px from its input), the second removed by OKS-NMS."""
    inputs = np.stack([_pose(80, 120), _pose(160, 120), _pose(250, 120)])
    refined = inputs.copy()
    refined[0, 9, :2] += (-40, 30)  # a moved left wrist
    refined[..., :2] += 1e-3  # the network moves every keypoint a little
    refined[..., 2] = 0.8
    error = np.full((3, 17), 0.1)
    error[0, 9] = 0.95
    boxes = np.array([[20.0, 30, 120, 180], [np.nan] * 4, [190, 30, 120, 180]])
    args = dict(keypoints=refined, scores=np.array([0.9, 0.5, 0.7]), error=error,
                kept=np.array([True, False, True]), refined=np.array([True, True, True]),
                inputs=inputs, boxes=boxes, spec=SPEC, image=image)
    return RefinedPoses(**{**args, **kw})  # type: ignore[arg-type]


def _image() -> np.ndarray:
    return np.full((H, W, 3), 90, dtype=np.uint8)


def test_per_person_access_len_index_iterate_and_select() -> None:
    poses = _poses()
    assert len(poses) == 3
    p = poses[0]
    assert isinstance(p, RefinedPerson)
    np.testing.assert_array_equal(p.keypoints, poses.keypoints[0])
    np.testing.assert_array_equal(p.error, poses.error[0])
    np.testing.assert_array_equal(p.input, poses.inputs[0])
    assert (p.score, p.kept, p.refined) == (0.9, True, True)
    assert isinstance(p.score, float) and isinstance(p.kept, bool)
    assert poses[-1].score == 0.7 and not poses[1].kept
    assert poses[np.int64(2)].score == 0.7
    with pytest.raises(IndexError):
        poses[3]
    assert [q.score for q in poses] == [0.9, 0.5, 0.7]
    kept = poses[poses.kept]  # a boolean mask: the rows it selects, still RefinedPoses
    assert isinstance(kept, RefinedPoses) and len(kept) == 2 and kept.kept.all()
    assert [q.score for q in kept] == [0.9, 0.7]
    assert kept.spec is SPEC and kept.boxes.shape == (2, 4)
    assert [q.score for q in poses[1:]] == [0.5, 0.7]
    assert [q.score for q in poses[[2, 0]]] == [0.7, 0.9]
    # no error head, no inputs: the person says so
    bare = _poses(error=None, inputs=None)
    assert bare[0].error is None and np.isnan(bare[0].input).all()


def test_repr_is_one_short_line() -> None:
    text = repr(_poses())
    assert text == ("RefinedPoses(3 persons x 17 keypoints, 3 refined, 2 kept; "
                    "scores [0.900 0.500 0.700])")
    many = _poses(keypoints=np.zeros((50, 17, 3)), scores=np.linspace(0, 1, 50),
                  kept=np.ones(50, bool), refined=np.zeros(50, bool), error=None,
                  inputs=None, boxes=None)
    line = repr(many)
    assert "\n" not in line and len(line) < 120 and line.endswith("...])")
    assert "50 persons" in line and "0 refined, 50 kept" in line
    assert repr(_poses()[0]) == "RefinedPerson(score 0.900, refined, max error 0.95)"
    assert "removed by OKS-NMS" in repr(_poses()[1])


def test_to_coco_gives_the_kept_persons_as_posefix_refine_writes_them(tmp_path: Path) -> None:
    poses = _poses()
    entries = poses.to_coco(42)
    assert [e["image_id"] for e in entries] == [42, 42]
    assert [e["score"] for e in entries] == [0.9, 0.7]
    first = entries[0]
    assert first["category_id"] == 1 and first["bbox"] == [20.0, 30.0, 120.0, 180.0]
    assert len(first["keypoints"]) == 17 * 3
    # rounded as the CLI's writer rounds: 4 decimals, Python's round
    want = [round(float(v), 4) for v in poses.keypoints[0].reshape(-1)]
    assert first["keypoints"] == want and first["keypoints"] != poses.keypoints[0].ravel().tolist()
    every = poses.to_coco(42, removed=True)
    assert len(every) == 3 and "bbox" not in every[1]  # no box given: none written
    # save: the same entries, in the atomic file the CLI writes
    out = poses.save(tmp_path / "r.json", 42)
    assert json.loads(out.read_text()) == entries
    assert len(json.loads(poses.save(tmp_path / "all.json", 7, removed=True).read_text())) == 3
    write_results(tmp_path / "cli.json", poses._detections(42, np.flatnonzero(poses.kept)))
    assert (tmp_path / "cli.json").read_bytes() == out.read_bytes()
    with pytest.raises(ValueError, match="NaN"):
        _poses(scores=np.array([np.nan, 0.5, 0.7])).save(tmp_path / "bad.json", 1)
    assert not (tmp_path / "bad.json").exists()


def _has(img: np.ndarray, color: tuple[int, int, int], tol: int = 12) -> int:
    """How many pixels are ``color`` (RGB)."""
    return int((np.abs(img.astype(int) - color).max(-1) <= tol).sum())


def test_plot_draws_the_kept_refined_poses_on_the_image() -> None:
    image = _image()
    poses = _poses(image)
    out = poses.plot()
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image) and (image == 90).all()  # drawn on a copy
    assert _has(out, LEFT_COLOR) > 20 and _has(out, RIGHT_COLOR) > 20
    # the removed person (around x=160) is not drawn; the kept ones (x=80, x=250) are
    assert (out[40:200, 140:180] == 90).all()
    assert not (out[40:200, 60:100] == 90).all() and not (out[40:200, 230:270] == 90).all()
    assert _has(out, MOVE_COLOR) == 0  # no marks without the input
    # on a given image, in BGR
    bgr = poses.plot(image[..., ::-1].copy(), color="bgr")
    np.testing.assert_array_equal(bgr, out[..., ::-1])
    # without scores above the poses: fewer white pixels (the score text is white)
    assert _has(poses.plot(scores=False), (255, 255, 255)) < _has(out, (255, 255, 255))
    with pytest.raises(ValueError, match="no image"):
        _poses().plot()
    with pytest.raises(ValueError, match="color"):
        poses.plot(color="hsv")


def test_plot_with_the_input_marks_the_moved_keypoints_and_the_removed_person() -> None:
    poses = _poses(_image())
    out = poses.plot(show_input=True)
    assert out.shape[0] > H and out.shape[1] > 2 * W  # two labelled panels side by side
    left, right = out[-H:, :W], out[-H:, -W:]
    assert _has(right, REMOVED_COLOR, 4) > 10  # the person OKS-NMS removed, grey
    assert _has(left, MOVE_COLOR, 40) == 0 and _has(right, MOVE_COLOR, 40) > 0
    # the marks are where the moved keypoint was: without the move, only they go
    unmoved = poses.inputs.copy()
    unmoved[0, 9] = poses.keypoints[0, 9]
    still = _poses(_image(), inputs=unmoved).plot(show_input=True)[-H:, -W:]
    assert _has(still, MOVE_COLOR, 40) == 0
    changed = np.flatnonzero(np.any(still != right, axis=-1).any(0))  # columns that differ
    x_from, x_to = poses.inputs[0, 9, 0], poses.keypoints[0, 9, 0]
    assert len(changed) > 10 and x_to - 5 <= changed.min() and changed.max() <= x_from + 5


SAMPLE = Path(posefix.__file__).parent / "assets" / "sample"


def test_refine_image_gives_poses_that_plot_with_their_own_image(tmp_path: Path) -> None:
    """The real thing: the shipped model on a sample frame, the result drawn and saved."""
    from PIL import Image

    from posefix.images import load_image

    image = load_image(SAMPLE / "000000196141.jpg")
    people = [d for d in json.loads((SAMPLE / "movenet.json").read_text())
              if d["image_id"] == 196141]
    kp = np.array([d["keypoints"] for d in people]).reshape(-1, 17, 3)
    refiner = posefix.Refiner.from_checkpoint()
    res = refiner.refine_image(image, kp)
    assert res.image is image and res.spec is refiner.spec and res.color == "rgb"
    np.testing.assert_array_equal(res.inputs, kp)
    assert not np.shares_memory(res.inputs, kp)
    picture = res.plot(show_input=True)
    assert _has(picture, MOVE_COLOR) > 50  # the network moved keypoints
    Image.fromarray(picture).save(tmp_path / "plot.png")
    bgr = refiner.refine_image(np.ascontiguousarray(image[..., ::-1]), kp, color="bgr")
    assert bgr.color == "bgr"
    np.testing.assert_array_equal(bgr.plot(), res.plot()[..., ::-1])
    assert len(res.to_coco(196141)) == int(res.kept.sum())
