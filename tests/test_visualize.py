"""Drawing poses and writing side-by-side panels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posefix.commands.visualize import visualize_files
from posefix.errors import InputError
from posefix.spec import load_spec
from posefix.visualize import (
    CENTER_COLOR,
    LEFT_COLOR,
    MOVE_COLOR,
    REMOVED_COLOR,
    RIGHT_COLOR,
    Panel,
    draw_moves,
    draw_pose,
    keypoint_sides,
    label_panel,
    render_panels,
)

COCO = load_spec("coco17")


def _pose(points: dict[str, tuple[float, float]], spec=COCO, score: float = 1.0) -> np.ndarray:
    kp = np.zeros((spec.num_keypoints, 3))
    for name, (x, y) in points.items():
        kp[spec.index(name)] = [x, y, score]
    return kp


def test_sides_from_names_for_any_order() -> None:
    for name in ("coco17", "mpii16", "aic14", "crowdpose14"):
        spec = load_spec(name)
        side = keypoint_sides(spec)
        for i, n in enumerate(spec.keypoints):
            want = -1 if n.startswith("left") else 1 if n.startswith("right") else 0
            assert side[i] == want, (name, n)


def test_draw_pose_colours_limbs_by_side() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    kp = _pose({"left_shoulder": (20, 10), "left_elbow": (20, 90),
                "right_shoulder": (80, 10), "right_elbow": (80, 90)})
    out = draw_pose(img, kp, COCO, thickness=3, radius=2)
    assert img.max() == 0  # drawn on a copy
    np.testing.assert_array_equal(out[50, 20], LEFT_COLOR)
    np.testing.assert_array_equal(out[50, 80], RIGHT_COLOR)
    np.testing.assert_array_equal(out[10, 50], CENTER_COLOR)  # shoulder to shoulder
    assert out[50, 50].max() == 0


def test_draw_pose_hides_low_scores_and_missing_keypoints() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    kp = _pose({"left_shoulder": (20, 10), "left_elbow": (20, 90)})
    kp[COCO.index("left_elbow"), 2] = 0.2
    assert draw_pose(img, kp, COCO, min_score=0.3)[50, 20].max() == 0
    assert draw_pose(img, kp, COCO, min_score=0.1)[50, 20].max() > 0
    kp[COCO.index("left_elbow")] = [0, 0, 1]  # (0, 0): absent
    assert draw_pose(img, kp, COCO)[:, :5].max() == 0
    several = np.stack([_pose({"nose": (30, 30)}), _pose({"nose": (70, 70)})])
    out = draw_pose(img, several, COCO, radius=3)
    assert out[30, 30].max() > 0 and out[70, 70].max() > 0


def test_render_panels_side_by_side_and_scaled() -> None:
    img = np.zeros((400, 200, 3), np.uint8)
    kp = _pose({"left_hip": (100, 100), "left_knee": (100, 300)})[None]
    canvas = render_panels(img, [("a", kp, None), ("b", kp, np.array([0.5]))], COCO,
                           max_side=200)
    # Two 100 x 200 panels under 28 px title bars, 6 px apart.
    assert canvas.shape == (228, 206, 3)
    np.testing.assert_array_equal(canvas[28 + 100, 50], LEFT_COLOR)
    np.testing.assert_array_equal(canvas[28 + 100, 106 + 50], LEFT_COLOR)


def _write_dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(imgs / "000000000007.jpg")
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(imgs / "000000000009.png")
    kp = _pose({"left_hip": (20, 10), "left_knee": (20, 50)})
    gt = {
        "images": [{"id": 7, "file_name": "000000000007.jpg", "width": 80, "height": 60},
                   {"id": 9, "file_name": "000000000009.png", "width": 80, "height": 60}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
                         "keypoints": kp.reshape(-1).tolist(), "area": 800,
                         "bbox": [10, 5, 20, 50], "num_keypoints": 2}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.keypoints),
                        "skeleton": []}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    moved = kp.copy()
    moved[:, 0] += 40
    res = [{"image_id": 7, "category_id": 1, "keypoints": moved.reshape(-1).tolist(),
            "score": 0.9},
           {"image_id": 7, "category_id": 1, "keypoints": kp.reshape(-1).tolist(), "score": 0.05}]
    (tmp_path / "res.json").write_text(json.dumps(res))
    return imgs, tmp_path / "gt.json", tmp_path / "res.json"


def test_visualize_files(tmp_path: Path) -> None:
    imgs, gt, res = _write_dataset(tmp_path)
    out = tmp_path / "vis"
    written = visualize_files(imgs, out, gt=gt, results=[f"mine={res}", str(res)],
                              min_score=0.1)
    assert [p.name for p in written] == ["000000000007.png", "000000000009.png"]
    canvas = np.asarray(Image.open(written[0]))
    assert canvas.shape == (60 + 28, 3 * 80 + 2 * 6, 3)
    panel = [canvas[28:, i * 86:i * 86 + 80] for i in range(3)]
    np.testing.assert_array_equal(panel[0][30, 20], LEFT_COLOR)  # ground truth
    assert panel[0][30, 60].max() == 0
    np.testing.assert_array_equal(panel[1][30, 60], LEFT_COLOR)  # the moved result
    assert panel[1][30, 20].max() == 0  # score 0.05 < min_score: hidden
    assert len(visualize_files(imgs, out, gt=gt, results=[str(res)], max_images=1)) == 1


def test_visualize_files_without_gt_uses_coco_names(tmp_path: Path) -> None:
    imgs, _, res = _write_dataset(tmp_path)
    written = visualize_files(imgs, tmp_path / "vis", results=[str(res)])
    assert [p.name for p in written] == ["000000000007.png"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 5, "category_id": 1, "score": 1.0,
                                "keypoints": [0.0] * 51}]))
    with pytest.raises(InputError, match="image_id 5"):
        visualize_files(imgs, tmp_path / "vis2", results=[str(bad)])


@pytest.mark.parametrize("text", ["ground truth (2)", "refined (12)", "0.92"])
def test_text_outline_hugs_the_text(text: str) -> None:
    # A thick outline advances further per glyph than the thin text and leaves a shadow
    # to its right; the outline may only extend a pixel or two beyond the text.
    bar = label_panel(np.full((4, 400, 3), 90, np.uint8), text)[:-4]
    changed = np.flatnonzero((bar != 32).any(axis=(0, 2)))
    bright = np.flatnonzero((bar > 200).any(axis=(0, 2)))
    assert len(bright) > 0
    assert changed.max() - bright.max() <= 2 and bright.min() - changed.min() <= 2


def _near(img: np.ndarray, color: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.abs(img.astype(int) - np.asarray(color)).max(-1) <= tol


def test_draw_moves_marks_each_moved_keypoint_from_its_origin() -> None:
    img = np.full((200, 200, 3), 255, np.uint8)
    kp = np.zeros((1, COCO.num_keypoints, 3))
    kp[0, COCO.index("left_knee")] = [150, 100, 1]
    kp[0, COCO.index("right_knee")] = [60, 40, 1]
    origins = np.full((1, COCO.num_keypoints, 2), np.nan)
    origins[0, COCO.index("left_knee")] = [50, 100]  # moved 100 px to the right
    out = draw_moves(img, kp, origins)
    assert _near(out[100, 80:120], MOVE_COLOR).all()  # the line between them
    assert not _near(out[30:50, 50:70], MOVE_COLOR).any()  # the unmoved knee: nothing
    ring = _near(out[90:111, 40:61], MOVE_COLOR)
    assert ring.any() and not ring[10, 10]  # a ring, hollow, at the origin
    assert (draw_moves(img, kp, np.full_like(origins, np.nan)) == img).all()


def test_render_panels_enlarges_small_images_and_marks_moves_and_removed() -> None:
    img = np.full((170, 60, 3), 90, np.uint8)  # an LSP-sized image
    before = _pose({"left_hip": (30, 80), "left_knee": (10, 120)})[None]
    after = before.copy()
    after[0, COCO.index("left_knee"), :2] = [30, 130]
    origins = np.full((1, COCO.num_keypoints, 2), np.nan)
    origins[0, COCO.index("left_knee")] = [10, 120]
    removed = _pose({"left_hip": (30, 20), "left_knee": (40, 50)})[None]
    canvas = render_panels(img, [Panel("input", before), Panel("refined", after, origins=origins,
                                                               removed=removed)],
                           COCO, min_side=480, title=["one line", "two lines"])
    panel_h = canvas.shape[0] - 28 - 44
    assert panel_h == 480  # enlarged 480/170
    width = round(60 * 480 / 170)
    right = canvas[-480:, width + 6:]
    left = canvas[-480:, :width]
    assert _near(right, MOVE_COLOR, 20).sum() > 20 and not _near(left, MOVE_COLOR, 20).any()
    assert _near(right, REMOVED_COLOR, 10).sum() > 20
    assert (canvas[:44] > 0).all() and (canvas[:44] < 255).any()  # a title bar with text
    # Large images are still shrunk to max_side, and never enlarged past min_side.
    big = render_panels(np.zeros((1000, 800, 3), np.uint8), [("a", before, None)], COCO,
                        max_side=560, min_side=480)
    assert big.shape[0] == 560 + 28
