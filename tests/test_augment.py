"""Augmentation: off is the identity, each option does what it says, draws are reproducible;
photometric changes leave the keypoints alone, the elastic warp moves them with the pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from posefix.augment import Elastic, Photometric
from posefix.config import ConfigError, load_config
from posefix.data import build_dataset


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 215, size=(64, 48, 3), dtype=np.uint8)


def test_off_returns_the_crop_and_draws_nothing() -> None:
    img, rng = _image(), np.random.default_rng(1)
    state = rng.bit_generator.state
    assert Photometric()(img, rng) is img
    assert rng.bit_generator.state == state


def test_options_do_what_they_say() -> None:
    img = _image()
    gray = Photometric(gray_prob=1.0)(img, np.random.default_rng(0))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1],
                                                                         gray[..., 2])
    blur = Photometric(blur_prob=1.0)(img, np.random.default_rng(0)).astype(float)
    assert np.abs(np.diff(blur, axis=1)).mean() < 0.7 * np.abs(np.diff(img.astype(float),
                                                                       axis=1)).mean()
    erased = Photometric(erase_prob=1.0)(img, np.random.default_rng(0))
    changed = (erased != img).any(axis=2)
    ys, xs = np.nonzero(changed)
    box = changed[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert 0.02 * img[..., 0].size * 0.8 <= box.size <= 0.2 * img[..., 0].size
    assert changed.sum() == pytest.approx(box.size, rel=0.05)  # one rectangle, all noise
    color = [Photometric(color=0.4)(img, np.random.default_rng(s)) for s in range(2)]
    assert not np.array_equal(color[0], img) and not np.array_equal(color[0], color[1])
    again = Photometric(color=0.4)(img, np.random.default_rng(0))
    assert np.array_equal(color[0], again) and color[0].dtype == np.uint8


@pytest.mark.parametrize("kwargs", [{"color": 1.0}, {"blur_prob": -0.1}, {"erase_prob": 2}])
def test_bad_options_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Photometric(**kwargs)


def test_config_checks_and_dataset_keeps_the_keypoints(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="data.erase_prob"):
        load_config("tiny_cpu", ["data.erase_prob=1.5"])
    coco = data_dir / "coco" / "test_coco.json"
    sets = f"[{{ann: {coco}, image_files: [000000000785.jpg]}}]"
    plain = build_dataset(load_config("tiny_cpu", [f"data.train={sets}"]), "train")
    aug = build_dataset(load_config("tiny_cpu", [f"data.train={sets}", "data.color_jitter=0.3",
                                                 "data.erase_prob=1.0"]), "train")
    a, b = plain[(2, 0)], aug[(2, 0)]
    for key in ("input_pose", "target", "target_valid"):
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key
    assert not np.array_equal(a["image"].numpy(), b["image"].numpy())
    val = build_dataset(load_config("tiny_cpu", [f"data.val={sets}", "data.erase_prob=1.0"]),
                        "val")
    assert val.photometric == Photometric()  # validation crops are never augmented


def test_elastic_moves_keypoints_with_their_pixels() -> None:
    points = np.array([[30.3, 70.6], [60.0, 20.0], [48.0, 100.0]])
    moved_any = False
    for seed in range(20):
        img = np.zeros((128, 96), np.float32)
        for x, y in points:
            cv2.circle(img, (round(x * 16), round(y * 16)), 2 * 16, 1.0, -1, shift=4)
        warped, moved = Elastic(0.03)(img, points, np.random.default_rng(seed))
        ys, xs = np.mgrid[0:128, 0:96]
        for px, py in moved:  # the centroid of the warped dot is where its point went
            m = warped * (np.hypot(xs - px, ys - py) < 8)
            c = np.array([(xs * m).sum(), (ys * m).sum()]) / m.sum()
            assert np.hypot(*(c - [px, py])) < 1.0, (seed, c, (px, py))
        moved_any |= bool(np.abs(moved - points).max() > 2.0)
    assert moved_any
    field = Elastic(0.2).field((128, 96), np.random.default_rng(0))
    assert max(np.abs(np.gradient(field[..., c], axis=a)).max() for c in range(2)
               for a in range(2)) <= 0.4 + 1e-6  # bends, never folds


def test_elastic_off_or_skipped_returns_its_inputs() -> None:
    img, pts, rng = _image(), np.ones((2, 17, 2)), np.random.default_rng(0)
    state = rng.bit_generator.state
    out = Elastic()(img, pts, rng)
    assert out[0] is img and out[1] is pts and rng.bit_generator.state == state
    out = Elastic(0.03, prob=0.0)(img, pts, rng)
    assert out[0] is img and out[1] is pts
    with pytest.raises(ValueError):
        Elastic(0.3)


def test_dataset_elastic_moves_input_and_target_together(data_dir: Path) -> None:
    coco = data_dir / "coco" / "test_coco.json"
    sets = f"[{{ann: {coco}, image_files: [000000000785.jpg]}}]"
    plain = build_dataset(load_config("tiny_cpu", [f"data.train={sets}"]), "train")
    bent = build_dataset(load_config("tiny_cpu", [f"data.train={sets}", "data.elastic=0.05"]),
                         "train")
    a, b = plain[(0, 0)], bent[(0, 0)]  # same synthesis and crop, then the warp
    valid = (a["target_valid"] & b["target_valid"] & a["input_pose"][:, 2].bool()
             & b["input_pose"][:, 2].bool()).numpy()
    ta, tb = a["target"].numpy()[valid], b["target"].numpy()[valid]
    ia, ib = a["input_pose"].numpy()[valid, :2], b["input_pose"].numpy()[valid, :2]
    assert 0.5 < np.abs(ta - tb).max() < 20  # bent, not scrambled
    # Input and target move alike: the input's error changes by at most the warp's slope.
    err_a, err_b = np.linalg.norm(ia - ta, axis=1), np.linalg.norm(ib - tb, axis=1)
    assert np.all(np.abs(err_b - err_a) <= 0.8 * err_a + 1e-3), (err_a, err_b)
