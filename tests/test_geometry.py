"""Boxes, crops and flips: the affine maps, their inverses and the flip involution."""

from __future__ import annotations

import numpy as np
import pytest

from posefix.geometry import (
    apply_affine,
    box_from_keypoints,
    box_iou,
    crop_transforms,
    fix_aspect,
    flip_keypoints,
    invert_affine,
    sanitize_boxes,
    warp_crop,
)
from posefix.spec import load_spec


@pytest.mark.parametrize("rotation", [0.0, 30.0, -75.0, 180.0])
def test_crop_maps_box_centre_to_crop_centre(rotation: float) -> None:
    centers = np.array([[120.0, 80.0], [10.0, 300.0]])
    sizes = np.array([[60.0, 80.0], [150.0, 200.0]])
    m = crop_transforms(centers, sizes, (256, 192), rotation)
    out = apply_affine(centers[:, None], m)[:, 0]
    np.testing.assert_allclose(out, [[96.0, 128.0]] * 2, atol=1e-9)
    # The region's width fills the crop's width whatever the rotation: scale = 192 / w.
    edge = centers + np.stack([sizes[:, 0] / 2, np.zeros(2)], 1)
    d = np.linalg.norm(apply_affine(edge[:, None], m)[:, 0] - out, axis=-1)
    np.testing.assert_allclose(d, [96.0, 96.0], atol=1e-9)


def test_rotation_direction_is_counter_clockwise_in_the_crop() -> None:
    m = crop_transforms(np.array([[0.0, 0.0]]), np.array([[10.0, 10.0]]), (10, 10), 90.0)
    # A point to the right of the centre goes up (smaller y) in the crop after +90 degrees.
    p = apply_affine(np.array([[[1.0, 0.0]]]), m)[0, 0] - [5.0, 5.0]
    np.testing.assert_allclose(p, [0.0, -1.0], atol=1e-9)


def test_invert_affine_round_trip() -> None:
    rng = np.random.default_rng(0)
    m = crop_transforms(rng.uniform(0, 500, (5, 2)), rng.uniform(20, 300, (5, 2)), (64, 48),
                        rng.uniform(-80, 80, 5))
    pts = rng.uniform(-100, 600, (5, 17, 2))
    back = apply_affine(apply_affine(pts, m), invert_affine(m))
    np.testing.assert_allclose(back, pts, atol=1e-8)
    # m o m^-1 is the identity on crop points too.
    q = rng.uniform(0, 64, (5, 3, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(q, invert_affine(m)), m), q, atol=1e-8)


def test_warp_crop_puts_pixels_where_the_affine_says() -> None:
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    src = np.array([180.0, 70.0])
    image[int(src[1]), int(src[0])] = 255
    m = crop_transforms(np.array([[170.0, 90.0]]), np.array([[60.0, 80.0]]), (128, 96), 20.0)
    crop = warp_crop(image, m[0], (128, 96))
    assert crop.shape == (128, 96, 3)
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    expect = apply_affine(src[None, None], m)[0, 0]
    assert np.hypot(x - expect[0], y - expect[1]) <= 1.0


def test_flip_is_an_involution_that_swaps_pairs() -> None:
    spec = load_spec("coco17")
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform(0, 640, (4, 17, 2)), rng.integers(0, 3, (4, 17, 1))], -1)
    once = flip_keypoints(kp, 640, spec)
    np.testing.assert_allclose(flip_keypoints(once, 640, spec), kp)
    le, re = spec.index("left_eye"), spec.index("right_eye")
    np.testing.assert_allclose(once[:, le, 0], 639 - kp[:, re, 0])
    np.testing.assert_allclose(once[:, le, 1:], kp[:, re, 1:])
    nose = spec.index("nose")  # no partner: mirrored in place
    np.testing.assert_allclose(once[:, nose, 0], 639 - kp[:, nose, 0])
    assert sorted(spec.flip_index[spec.flip_index]) == list(range(17))
    assert (spec.flip_index[spec.flip_index] == np.arange(17)).all()


def test_box_iou() -> None:
    a = np.array([[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 1.0, 1.0]])
    b = np.array([[1.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [50.0, 50.0, 5.0, 5.0]])
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, [[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(box_iou(b, a), iou.T)
    assert box_iou(np.array([[0.0, 0.0, 0.0, 0.0]]), a).max() == 0.0


def test_fix_aspect_and_padding() -> None:
    boxes = np.array([[10.0, 20.0, 30.0, 100.0], [0.0, 0.0, 200.0, 50.0]])
    centers, sizes = fix_aspect(boxes, 0.75, padding=1.25)
    np.testing.assert_allclose(centers, [[25.0, 70.0], [100.0, 25.0]])
    np.testing.assert_allclose(sizes[:, 0] / sizes[:, 1], [0.75, 0.75])
    # Grown (never shrunk) to the aspect ratio, then padded.
    assert (sizes >= boxes[:, 2:] * 1.25 - 1e-9).all()
    np.testing.assert_allclose(sizes[0], [75.0 * 1.25, 100.0 * 1.25])


def test_sanitize_boxes_clips_and_drops() -> None:
    boxes = np.array([[-5.0, -5.0, 20.0, 20.0], [90.0, 40.0, 30.0, 30.0], [10.0, 10.0, 0.0, 5.0]])
    out, keep = sanitize_boxes(boxes, 100, 50)
    assert keep.tolist() == [True, True, False]
    np.testing.assert_allclose(out[0], [0.0, 0.0, 19.0, 19.0])
    np.testing.assert_allclose(out[1], [90.0, 40.0, 9.0, 9.0])


def test_box_from_keypoints_enlarges_and_has_a_minimum() -> None:
    kp = np.array([[[10.0, 10.0], [110.0, 60.0], [999.0, 999.0]]])
    valid = np.array([[True, True, False]])
    box = box_from_keypoints(kp, valid, enlarge=1.2, min_size=20.0)[0]
    np.testing.assert_allclose(box, [0.0, 5.0, 120.0, 60.0])
    tiny = box_from_keypoints(np.array([[[5.0, 5.0]]]), enlarge=1.2, min_size=20.0)[0]
    np.testing.assert_allclose(tiny, [-5.0, -5.0, 20.0, 20.0])
