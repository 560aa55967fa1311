"""Refinement pipeline: exact crop/uncrop geometry, flip test, NMS, rescoring, streaming,
image loading (grayscale, PNG, CMYK, 16-bit, EXIF) and bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from posefix.commands.refine import refine_files
from posefix.config import Config, ModelConfig
from posefix.crops import crop_detections
from posefix.decoding import Decoding
from posefix.errors import InputError
from posefix.images import load_image, load_image_list
from posefix.io import Detections
from posefix.options import RefineFileOptions, RefineOptions
from posefix.refine import refine, refine_detections
from posefix.refiner import Refiner
from posefix.spec import load_spec

SPEC = load_spec("coco17")
INPUT = (64, 48)


# --------------------------------------------------------------------------- helpers
def identity(images: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A 'network' that returns its input pose: refinement must then change nothing."""
    return pose[..., :2].clone(), torch.full(pose.shape[:2], 0.5)


def shifted(dx: float):
    """Returns the input pose moved by ``dx`` crop pixels to the right (a biased network)."""
    def predict(images: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = pose[..., :2].clone()
        out[..., 0] += dx
        return out, torch.ones(pose.shape[:2])
    return predict


def brightest(images: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Puts every keypoint on the intensity centroid of the crop's bright spot."""
    x = images[:, 0]
    w = x - x.amin(dim=(1, 2), keepdim=True)
    h_idx = torch.arange(x.shape[1], dtype=x.dtype)
    w_idx = torch.arange(x.shape[2], dtype=x.dtype)
    total = w.sum(dim=(1, 2))
    cx = (w.sum(1) * w_idx).sum(-1) / total
    cy = (w.sum(2) * h_idx).sum(-1) / total
    k = pose.shape[1]
    coords = torch.stack([cx, cy], -1)[:, None].expand(-1, k, -1)
    return coords.contiguous(), torch.ones(pose.shape[:2])


def spot_image(h: int, w: int, x0: float, y0: float, sigma: float = 4.0) -> np.ndarray:
    """Black RGB image with a white Gaussian spot centred at (x0, y0)."""
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def random_dets(rng: np.random.Generator, n: int, w: int, h: int, image_ids: np.ndarray,
                ) -> Detections:
    kp = np.zeros((n, SPEC.num_keypoints, 3))
    kp[..., 0] = rng.uniform(0, w - 1, kp.shape[:2])
    kp[..., 1] = rng.uniform(0, h - 1, kp.shape[:2])
    kp[..., 2] = rng.uniform(0.05, 1, kp.shape[:2])
    return Detections(np.asarray(image_ids, dtype=np.int64), kp, rng.uniform(0.1, 1, n),
                      np.full((n, 4), np.nan), np.ones(n, dtype=np.int64))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised resnet18 refiner at 64x48, saved as a real checkpoint."""
    from posefix.checkpoint import save_checkpoint
    from posefix.model import build_model

    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", input_size=INPUT, deconv_channels=32))
    net = build_model(cfg.model, SPEC.num_keypoints)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, model=net, config=cfg, spec=SPEC)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("box", ["pose", "bbox"])
def test_identity_network_returns_input_keypoints(flip: bool, box: str) -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (150, 210, 3), dtype=np.uint8)
    dets = random_dets(rng, 9, 210, 150, [3, 3, 5, 3, 5, 5, 3, 7, 7])
    dets.boxes[::2] = [[20, 10, 90, 120]]  # half with a bbox; the others fall back
    out, counts = refine_detections(dets, lambda i: img, identity, SPEC,
                                    RefineOptions(flip=flip, box=box, nms=0, workers=0,
                                                  batch_size=4, score="input"),
                                    input_size=INPUT)
    assert counts.refined == 9 and counts.detections_out == 9
    np.testing.assert_array_equal(out.image_ids, dets.image_ids)
    assert np.abs(out.keypoints[..., :2] - dets.keypoints[..., :2]).max() < 0.01
    np.testing.assert_allclose(out.keypoints[..., 2], 0.5)  # the network's confidence
    np.testing.assert_array_equal(out.scores, dets.scores)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("box", ["pose", "bbox"])
def test_crop_shows_the_image_region_of_the_pose(flip: bool, box: str) -> None:
    # A network that points at the bright spot of its crop must find it in the image:
    # the crop, its flip and the uncrop all agree with the image.
    x0, y0 = 131.3, 57.6
    img = spot_image(120, 200, x0, y0)
    kp = np.zeros((1, 17, 3))
    kp[0, :, 0] = np.linspace(100, 160, 17)
    kp[0, :, 1] = np.linspace(20, 110, 17)
    kp[0, :, 2] = 1
    dets = Detections(np.array([1]), kp, np.ones(1), np.array([[95.0, 15, 70, 100]]),
                      np.ones(1, dtype=np.int64))
    out = refine(dets, lambda i: img, brightest, SPEC,
                 RefineOptions(flip=flip, box=box, nms=0, workers=0), input_size=INPUT)
    np.testing.assert_allclose(out.keypoints[0, :, 0], x0, atol=0.3)
    np.testing.assert_allclose(out.keypoints[0, :, 1], y0, atol=0.3)


def test_flip_test_averages_the_unmirrored_prediction() -> None:
    # A network biased to the right by 2 crop px: the flip test cancels the bias exactly
    # only if the mirrored prediction is un-mirrored (x -> W-1-x) and un-swapped.
    rng = np.random.default_rng(2)
    img = np.zeros((100, 100, 3), np.uint8)
    dets = random_dets(rng, 4, 100, 100, [1, 1, 1, 1])
    plain = refine(dets, lambda i: img, shifted(2.0), SPEC,
                   RefineOptions(flip=False, nms=0, workers=0), input_size=INPUT)
    flipped = refine(dets, lambda i: img, shifted(2.0), SPEC,
                     RefineOptions(flip=True, nms=0, workers=0), input_size=INPUT)
    assert np.all(plain.keypoints[..., 0] - dets.keypoints[..., 0] > 0.1)
    assert np.abs(flipped.keypoints[..., :2] - dets.keypoints[..., :2]).max() < 0.01


def test_crop_box_from_the_pose_follows_the_reference() -> None:
    img = np.zeros((400, 400, 3), np.uint8)
    kp = np.zeros((1, 17, 3))
    kp[0, :, :2] = [[100, 100]] * 17
    kp[0, 1, :2] = [140, 180]  # extent 40 x 80
    kp[0, :, 2] = 1
    kp[0, 2] = [300, 300, 0]  # zero score: not in the box
    kp[0, 3] = [0, 0, 0.9]  # all-zero position: absent
    kp[0, 4] = [-5, 50, 0.9]  # outside the image: absent
    res = crop_detections(img, kp, np.full((1, 4), np.nan), SPEC.used_mask, (64, 48))
    # 1.2x the extent: 48 x 96; aspect 3:4 -> 72 x 96; padded 1.25 -> 90 x 120.
    np.testing.assert_allclose(res["areas"], [90 * 120])
    m = res["affine"][0]
    np.testing.assert_allclose(m[0, 0], 48 / 90)
    np.testing.assert_allclose(m @ [120, 140, 1], [23.5 + 0.5, 32])  # box centre -> crop centre
    valid = res["poses"][0, :, 2]
    assert valid[3] == 0 and valid[4] == 0 and valid[2] == 0  # (300, 300) is outside the crop
    assert valid[0] == 1 and valid[1] == 1


def test_tiny_box_gets_the_minimum_size() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    kp = np.zeros((1, 17, 3))
    kp[0, :, :2] = 50
    kp[0, :, 2] = 1
    res = crop_detections(img, kp, np.full((1, 4), np.nan), SPEC.used_mask, (64, 48))
    # 20 x 20 -> aspect 20 x 26.67 -> padded 25 x 33.3
    np.testing.assert_allclose(res["areas"], [25 * 25 / 0.75])


# --------------------------------------------------------------------------- NMS, scores
def test_oks_nms_per_image_and_order_kept() -> None:
    rng = np.random.default_rng(3)
    img = np.zeros((200, 200, 3), np.uint8)
    dets = random_dets(rng, 5, 200, 200, [1, 1, 2, 1, 2])
    dets.keypoints[1] = dets.keypoints[0] + [0.3, -0.2, 0]  # duplicate of 0, lower score
    dets.scores[:2] = [0.9, 0.4]
    dets.keypoints[4] = dets.keypoints[2]  # duplicate of 2 on image 2, higher score
    dets.scores[[2, 4]] = [0.3, 0.8]
    dets.keypoints[3] = dets.keypoints[2]  # same pose as 2 but on image 1: kept
    dets.scores[3] = 0.2
    out, counts = refine_detections(dets, lambda i: img, identity, SPEC,
                                    RefineOptions(nms=0.9, workers=0, score="input"),
                                    input_size=INPUT)
    assert counts.suppressed_nms == 2 and len(out) == 3
    np.testing.assert_array_equal(out.image_ids, [1, 1, 2])
    np.testing.assert_allclose(out.scores, [0.9, 0.2, 0.8])
    off = refine(dets, lambda i: img, identity, SPEC,
                 RefineOptions(nms=0, workers=0), input_size=INPUT)
    assert len(off) == 5


def test_heatmap_rescoring() -> None:
    rng = np.random.default_rng(4)
    img = np.zeros((100, 100, 3), np.uint8)
    dets = random_dets(rng, 3, 100, 100, [1, 2, 3])

    def half_sure(images: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conf = torch.linspace(0.2, 0.6, pose.shape[1]).expand(pose.shape[0], -1)
        return pose[..., :2].clone(), conf

    out = refine(dets, lambda i: img, half_sure, SPEC,
                 RefineOptions(score="heatmap", flip=False, nms=0, workers=0), input_size=INPUT)
    np.testing.assert_allclose(out.scores, dets.scores * 0.4, rtol=1e-6)
    np.testing.assert_allclose(out.keypoints[0, :, 2], np.linspace(0.2, 0.6, 17), rtol=1e-6)


def test_unrefinable_detections_are_kept_unchanged_and_counted() -> None:
    rng = np.random.default_rng(5)
    img = np.zeros((80, 120, 3), np.uint8)
    dets = random_dets(rng, 4, 120, 80, [1, 1, 1, 1])
    dets.keypoints[1] = 0  # all zero
    dets.keypoints[2, :, 0] = 500  # all outside the image
    out, counts = refine_detections(dets, lambda i: img, shifted(3.0), SPEC,
                                    RefineOptions(flip=False, nms=0.9, workers=0), input_size=INPUT)
    assert counts.unchanged_no_keypoints == 2 and counts.refined == 2
    assert len(out) == 4
    np.testing.assert_array_equal(out.keypoints[1:3], dets.keypoints[1:3])
    assert np.all(out.keypoints[[0, 3], :, 0] > dets.keypoints[[0, 3], :, 0])


def test_batching_chunking_and_workers_do_not_change_results() -> None:
    rng = np.random.default_rng(6)
    imgs = {i: rng.integers(0, 255, (90, 130, 3), dtype=np.uint8) for i in range(6)}
    ids = rng.integers(0, 6, 150)
    ids[:80] = 2  # one crowded image: split into chunks of 64
    dets = random_dets(rng, 150, 130, 90, ids)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))

    def image_dependent(images: torch.Tensor, pose: torch.Tensor,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        f = net(images).flatten(1)  # depends on the crop's content
        return pose[..., :2] + f[:, :2, None].transpose(1, 2), torch.sigmoid(f[:, 2:3]).expand(
            -1, pose.shape[1])

    a, ca = refine_detections(dets, imgs.__getitem__, image_dependent, SPEC,
                              RefineOptions(nms=0.5, score="heatmap", batch_size=7, workers=0),
                              input_size=INPUT)
    b, cb = refine_detections(dets, imgs.__getitem__, image_dependent, SPEC,
                              RefineOptions(nms=0.5, score="heatmap", batch_size=64, workers=2),
                              input_size=INPUT)
    assert ca == cb and ca.suppressed_nms > 0
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)


def test_refining_in_place_gives_the_same_output_with_one_copy_of_the_poses() -> None:
    rng = np.random.default_rng(9)
    imgs = {i: rng.integers(0, 255, (90, 130, 3), dtype=np.uint8) for i in range(5)}
    kw = dict(input_size=INPUT, options=RefineOptions(nms=0.5, score="heatmap", workers=0,
                                                      flip=False))
    for ids in (np.repeat(np.arange(5), 30), rng.integers(0, 5, 150)):  # grouped or not
        dets = random_dets(rng, 150, 130, 90, ids)
        dets.keypoints[::7] *= 0.97  # near duplicates: NMS suppresses some
        want, counts = refine_detections(dets, imgs.__getitem__, shifted(2.0), SPEC, **kw)
        assert counts.suppressed_nms > 0
        mine = Detections(*(a.copy() for a in vars(dets).values()))
        got, _ = refine_detections(mine, imgs.__getitem__, shifted(2.0), SPEC, inplace=True,
                                   **kw)
        for f in ("image_ids", "keypoints", "scores", "boxes", "category_ids"):
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
        # grouped by image or not, the refined poses overwrite the input's array: no copy
        assert np.shares_memory(got.keypoints, mine.keypoints)


def test_real_network_from_checkpoint(tiny_checkpoint: Path) -> None:
    from posefix.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(7)
    img = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    dets = random_dets(rng, 5, 140, 100, [1, 1, 1, 2, 2])
    out, counts = refine_detections(dets, lambda i: img, ckpt,
                                    options=RefineOptions(nms=0, workers=0, device="cpu"))
    assert counts.refined == 5
    assert np.all(np.isfinite(out.keypoints))
    assert np.all((out.keypoints[..., 2] > 0) & (out.keypoints[..., 2] <= 1))
    # Refined keypoints lie in the crops around the input poses.
    lo = dets.keypoints[..., :2].min(1) - 100
    hi = dets.keypoints[..., :2].max(1) + 100
    assert np.all((out.keypoints[..., :2] >= lo[:, None]) & (out.keypoints[..., :2] <= hi[:, None]))
    with pytest.raises(ValueError, match="keypoints"):
        refine(Detections.empty(14), lambda i: img, ckpt)


def test_refiner_is_built_once_with_spec_size_and_padding(tiny_checkpoint: Path) -> None:
    import posefix
    from posefix.checkpoint import default_checkpoint_path, load_checkpoint
    from posefix.refiner import DEFAULT_PADDING, as_refiner, load_refiner

    assert posefix.Refiner is Refiner
    shipped = load_checkpoint(default_checkpoint_path())
    r = Refiner.from_checkpoint(backend="torch", device="cpu", error_gate=0.7)  # the shipped model
    assert r.spec == shipped.spec and str(default_checkpoint_path()) in r.description
    assert r.input_size == tuple(shipped.config.model.input_size)
    assert r.padding == shipped.config.data.bbox_padding and r.flip
    assert r.decoding.gate == pytest.approx(0.7) and r.error_gate == r.decoding.gate
    assert r.decoding.steps == shipped.decoding.steps  # a threshold alone keeps the steps
    other = r.with_decoding(dataclasses.replace(r.decoding, gate=None, flip=False))
    assert other.predict is r.predict and (other.error_gate, other.flip) == (None, False)
    assert (r.error_gate, r.flip) == (pytest.approx(0.7), True)  # the first is unchanged
    assert as_refiner(r) is r
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.config.data.bbox_padding = 1.4
    wrapped = as_refiner(ckpt, device="cpu", flip=False)
    assert (wrapped.padding, wrapped.input_size, wrapped.flip) == (1.4, INPUT, False)
    bare = as_refiner(ckpt.model, SPEC, device="cpu")  # a network knows its crop size
    assert (bare.spec, bare.input_size, bare.padding) == (SPEC, INPUT, DEFAULT_PADDING)
    with pytest.raises(ValueError, match="crop size"):
        as_refiner(identity, SPEC)
    with pytest.raises(ValueError, match="backend"):
        load_refiner(tiny_checkpoint, "tensorflow")
    # a checkpoint's padding reaches the crops: a bare network with another padding differs
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    dets = random_dets(rng, 2, 140, 100, [1, 1])
    a = refine(dets, lambda i: img, wrapped, options=RefineOptions(nms=0, workers=0))
    b = refine(dets, lambda i: img, wrapped, options=RefineOptions(nms=0, workers=0), padding=1.4)
    c = refine(dets, lambda i: img, ckpt.model, SPEC,
               RefineOptions(nms=0, workers=0, device="cpu", flip=False))
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert not np.allclose(a.keypoints, c.keypoints)


def test_refiner_flip_batches_mirror_copies() -> None:
    seen = {}

    def spy(images: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen["images"], seen["pose"] = images, pose
        return pose[..., :2], torch.ones(pose.shape[:2])

    r = Refiner(spy, INPUT, SPEC, "cpu", Decoding(flip=True))
    crops = np.random.default_rng(8).integers(0, 255, (2, *INPUT, 3), dtype=np.uint8)
    pose = np.zeros((2, 17, 3), np.float32)
    pose[:, 1] = [10, 20, 1]  # left eye
    r(crops, pose)
    assert seen["images"].shape == (4, 3, *INPUT)
    torch.testing.assert_close(seen["images"][2:], torch.flip(seen["images"][:2], dims=[3]))
    # The mirrored left eye becomes the right eye (index 2) at x = W - 1 - 10.
    np.testing.assert_allclose(seen["pose"][2, 2].numpy(), [37, 20, 1])
    assert seen["pose"][2, 1, 2] == 0


def test_the_pipeline_holds_persons_the_crop_shrinks_beyond_the_decodings_factor() -> None:
    """The crop's area reaches the decoding: a person the network sees shrunk by more than
    ``hold_above_shrink`` keeps its input keypoints, a smaller one is refined."""
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    kp = np.zeros((2, SPEC.num_keypoints, 3))
    kp[..., 2] = 1.0
    kp[0, :, :2] = rng.uniform(100, 140, (SPEC.num_keypoints, 2))  # ~50 px crop: 0.7x
    kp[1, :, :2] = rng.uniform(10, 390, (SPEC.num_keypoints, 2))  # ~450 px crop: 7x
    dets = Detections(np.array([1, 1]), kp, np.ones(2), np.full((2, 4), np.nan),
                      np.ones(2, dtype=np.int64))
    for hold, held in ((None, [False, False]), (2.0, [False, True]), (0.1, [True, True])):
        r = Refiner(shifted(3.0), INPUT, SPEC, "cpu", Decoding(hold_above_shrink=hold, flip=False))
        out = refine(dets, lambda i: img, r, options=RefineOptions(nms=0, workers=0))
        for i in range(2):
            same = np.allclose(out.keypoints[i, :, :2], kp[i, :, :2], atol=1e-3)
            assert same == held[i], (hold, i)


# --------------------------------------------------------------------------- images
def test_load_image_modes(tmp_path: Path) -> None:
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    gray = np.full((6, 8), 77, np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray).save(tmp_path / "gray.jpg", quality=100)
    Image.fromarray(np.full((6, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
    rgba = np.dstack([rgb, np.full((6, 8), 10, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    for name, want in [("rgb.png", (200, 0, 0)), ("gray.png", (77, 77, 77)),
                       ("gray.jpg", (77, 77, 77)), ("deep.png", (156, 156, 156)),
                       ("rgba.png", (200, 0, 0)), ("cmyk.jpg", (255, 0, 0)),
                       ("pal.png", (200, 0, 0))]:
        im = load_image(tmp_path / name)
        assert im.shape == (6, 8, 3) and im.dtype == np.uint8, name
        np.testing.assert_allclose(im.reshape(-1, 3).mean(0), want, atol=3, err_msg=name)


def _exif_jpeg(path: Path, raw: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(raw).save(path, exif=exif.tobytes(), quality=100)


def test_load_image_exif_orientation(tmp_path: Path) -> None:
    raw = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    raw[:, :5] = 255  # a bright band at the stored left edge
    _exif_jpeg(tmp_path / "rot.jpg", raw, 6)  # 6: display rotated 90 degrees clockwise
    shown = load_image(tmp_path / "rot.jpg")  # no size given: as viewers show it
    assert shown.shape == (40, 20, 3)
    assert shown[:5].mean() > 200 and shown[10:].mean() < 30  # left edge is now the top
    assert load_image(tmp_path / "rot.jpg", expected_size=(20, 40)).shape == (40, 20, 3)
    assert load_image(tmp_path / "rot.jpg", expected_size=(40, 20)).shape == (20, 40, 3)
    assert load_image(tmp_path / "rot.jpg", exif="ignore").shape == (20, 40, 3)
    assert load_image(tmp_path / "rot.jpg", exif="apply", expected_size=(40, 20)).shape == (
        40, 20, 3)


def test_unreadable_and_missing_images_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match="broken.jpg.*cannot read image"):
        load_image(tmp_path / "broken.jpg")
    with pytest.raises(InputError, match="nothere.jpg.*does not exist"):
        load_image(tmp_path / "nothere.jpg")
    good = np.zeros((4, 4, 3), np.uint8)
    Image.fromarray(good).save(tmp_path / "trunc.jpg")
    data = (tmp_path / "trunc.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.jpg"):
        load_image(tmp_path / "trunc.jpg")


def test_bad_images_in_the_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8garbage")
    dets = random_dets(rng, 4, 80, 60, [1, 2, 3, 1])
    paths = {1: tmp_path / "a.jpg", 2: tmp_path / "b.jpg", 3: tmp_path / "c.jpg"}
    with pytest.raises(InputError, match="b.jpg"):
        refine(dets, paths, shifted(1.0), SPEC, RefineOptions(workers=0), input_size=INPUT)
    out, counts = refine_detections(dets, paths, shifted(1.0), SPEC,
                                    RefineOptions(workers=0, skip_missing=True, flip=False, nms=0),
                                    input_size=INPUT)
    assert counts.refined == 2 and counts.skipped_unreadable_image == 1
    assert counts.skipped_missing_image == 1 and len(counts.bad_images) == 2
    np.testing.assert_array_equal(out.keypoints[1:3], dets.keypoints[1:3])
    assert np.all(out.keypoints[[0, 3], :, 0] > dets.keypoints[[0, 3], :, 0])


def test_exif_rotated_image_is_cropped_in_the_annotated_frame(tmp_path: Path) -> None:
    # The stored bitmap is 60 wide and 40 high with EXIF "rotate 90 clockwise"; its poses
    # are in the displayed frame (40 wide, 60 high), as the image list's size says.
    x0, y0 = 12.0, 45.0  # in the displayed frame
    shown = spot_image(60, 40, x0, y0)
    raw = np.ascontiguousarray(np.rot90(shown, k=1))  # undo the clockwise display rotation
    _exif_jpeg(tmp_path / "r.jpg", raw, 6)
    kp = np.zeros((1, 17, 3))
    kp[0, :, 0] = np.linspace(5, 30, 17)
    kp[0, :, 1] = np.linspace(30, 55, 17)
    kp[0, :, 2] = 1
    dets = Detections(np.array([4]), kp, np.ones(1), np.full((1, 4), np.nan), np.ones(1, int))
    out = refine(dets, {4: tmp_path / "r.jpg"}, brightest, SPEC,
                 RefineOptions(nms=0, workers=0), input_size=INPUT, image_sizes={4: (40, 60)})
    np.testing.assert_allclose(out.keypoints[0, :, :2], [[x0, y0]] * 17, atol=1.0)


# --------------------------------------------------------------------------- files
def _write_set(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(imgs / "g.png")
    Image.new("CMYK", (70, 50), (10, 200, 30, 0)).save(imgs / "c.jpg")
    _exif_jpeg(imgs / "e.jpg", rng.integers(0, 255, (50, 70, 3), dtype=np.uint8), 8)
    listing = {"images": [
        {"id": 1, "file_name": "g.png", "width": 70, "height": 50},
        {"id": 2, "file_name": "c.jpg", "width": 70, "height": 50},
        {"id": 3, "file_name": "e.jpg", "width": 50, "height": 70},
        {"id": 4, "file_name": "gone.jpg", "width": 70, "height": 50},
    ]}
    (tmp_path / "list.json").write_text(json.dumps(listing))
    dets = random_dets(rng, 6, 50, 50, [1, 2, 3, 3, 4, 1])
    (tmp_path / "in.json").write_text(json.dumps(dets.to_json()))
    return imgs, tmp_path / "list.json", tmp_path / "in.json"


def test_refine_files_with_image_list(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from posefix.io import load_results

    rng = np.random.default_rng(10)
    imgs, listing, results = _write_set(tmp_path, rng)
    assert set(load_image_list(listing)) == {1, 2, 3, 4}
    kw = dict(checkpoint=tiny_checkpoint, images=imgs, results=results, image_list=listing)
    with pytest.raises(InputError, match="gone.jpg.*does not exist"):
        refine_files(out=tmp_path / "o.json", options=RefineFileOptions(
            RefineOptions(workers=0, device="cpu")), **kw)
    assert not (tmp_path / "o.json").exists()
    s = refine_files(out=tmp_path / "o.json", options=RefineFileOptions(RefineOptions(
        workers=0, device="cpu", skip_missing=True, nms=0)), **kw)
    assert s["refined"] == 5 and s["skipped_missing_image"] == 1 and s["detections_out"] == 6
    assert s["image_size_mismatch"] == 0
    assert "refined 5" in s["text"]
    out = load_results(tmp_path / "o.json", SPEC)
    assert len(out) == 6
    before = json.loads(results.read_text())
    after = json.loads((tmp_path / "o.json").read_text())
    assert after[4]["keypoints"] == before[4]["keypoints"]  # the missing image's detection


def test_refine_files_refuses_to_overwrite_inputs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    rng = np.random.default_rng(11)
    imgs, listing, results = _write_set(tmp_path, rng)
    text = results.read_text()
    kw = dict(checkpoint=tiny_checkpoint, images=imgs, results=results, image_list=listing,
              options=RefineFileOptions(RefineOptions(workers=0, skip_missing=True)))
    for out in (results, tmp_path / "imgs" / ".." / "in.json", listing):
        with pytest.raises(InputError, match="refusing to write over"):
            refine_files(out=out, **kw)
    (tmp_path / "link.json").symlink_to(results)
    with pytest.raises(InputError, match="refusing to write over"):
        refine_files(out=tmp_path / "link.json", **kw)
    assert results.read_text() == text
    with pytest.raises(InputError, match="--gt or --image-list"):
        refine_files(checkpoint=tiny_checkpoint, images=imgs, results=results,
                     out=tmp_path / "o.json")


def test_streaming_crops_are_not_all_held() -> None:
    # Images are loaded lazily while batches run: the network sees its first batch long
    # before the last image is read, and never more crops than a batch at once.
    rng = np.random.default_rng(12)
    events: list[tuple[str, int]] = []
    img = np.zeros((60, 60, 3), np.uint8)

    def loader(image_id: int) -> np.ndarray:
        events.append(("load", image_id))
        return img

    def predict(images: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        events.append(("batch", len(images)))
        return pose[..., :2].clone(), torch.ones(pose.shape[:2])

    dets = random_dets(rng, 200, 60, 60, np.repeat(np.arange(100), 2))
    out = refine(dets, loader, predict, SPEC,
                 RefineOptions(batch_size=8, flip=False, nms=0, workers=0), input_size=INPUT)
    assert len(out) == 200
    kinds = [k for k, _ in events]
    assert kinds.index("batch") < 10 and kinds[-1] == "batch"
    assert max(n for k, n in events if k == "batch") == 8
    assert sum(n for k, n in events if k == "batch") == 200


def test_workers_survive_a_busy_parent(tmp_path: Path) -> None:
    # Loader workers are forked from a process whose OpenCV and torch thread pools have
    # been used (as after a first refinement); they must not deadlock. Run in a child
    # process so that a hang fails the test instead of stalling the suite.
    script = tmp_path / "busy.py"
    script.write_text(
        "import time, cv2, numpy as np, torch\n"
        "from posefix.io import Detections\n"
        "from posefix.options import RefineOptions\n"
        "from posefix.refine import refine\n"
        "big = np.zeros((1500, 1500, 3), np.uint8)\n"
        "for _ in range(3):\n"
        "    cv2.warpAffine(big, np.eye(2, 3), (1200, 1200))\n"
        "    torch.ones(512, 512) @ torch.ones(512, 512)\n"
        "time.sleep(1)\n"
        "img = np.zeros((80, 80, 3), np.uint8)\n"
        "kp = np.tile(np.array([[[20.0, 30.0, 1.0]]]), (12, 17, 1))\n"
        "kp[:, :, :2] += np.arange(17)[None, :, None]\n"
        "d = Detections(np.arange(12), kp, np.ones(12), np.full((12, 4), np.nan),\n"
        "               np.ones(12, dtype=np.int64))\n"
        "out = refine(d, {i: 'img.png' for i in range(12)}, lambda x, p: (p[..., :2],\n"
        "             torch.ones(p.shape[:2])), 'coco17', RefineOptions(workers=2),\n"
        "             input_size=(64, 48))\n"
        "print(len(out))\n")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "img.png")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "12"


# --------------------------------------------------------------------------- stages alone
def _chunk_of(n: int, image_id: int, last: bool, value: float) -> Any:
    from posefix.crops import CropTask
    from posefix.pipeline import Chunk

    rows = np.arange(n) + int(value) * 100
    item = {"crops": np.full((n, *INPUT, 3), value, dtype=np.uint8),
            "poses": np.zeros((n, SPEC.num_keypoints, 3), dtype=np.float32),
            "affine": np.tile(np.eye(2, 3), (n, 1, 1)), "areas": np.full(n, 100.0)}
    return Chunk(CropTask(image_id, rows, True, last), item, rows,
                 np.zeros((n, SPEC.num_keypoints, 2)), np.zeros((n, SPEC.num_keypoints)))


def test_batch_queue_makes_full_batches_across_chunks_and_returns_chunks_in_order() -> None:
    from posefix.pipeline import BatchQueue

    sizes = []

    def network(crops: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(len(crops))  # each crop's value comes back as its x coordinate
        xy = np.repeat(crops[:, 0, 0, :1].astype(np.float64)[:, None], SPEC.num_keypoints, 1)
        return np.concatenate([xy, xy], -1), np.ones((len(crops), SPEC.num_keypoints))

    queue = BatchQueue(network, batch_size=4)
    chunks = [_chunk_of(n, i, True, v) for i, (n, v) in enumerate([(5, 1), (0, 2), (7, 3), (3, 4)])]
    out = []
    out += queue.put(chunks[0])
    assert sizes == [4] and out == []  # one full batch; the first chunk still has a crop
    out += queue.put(chunks[1])
    assert out == []  # the empty chunk waits for the one before it
    out += queue.put(chunks[2])
    assert sizes == [4, 4, 4] and out == chunks[:3]  # 12 crops: three full batches
    out += queue.put(chunks[3])
    out += queue.flush()
    assert sizes == [4, 4, 4, 3] and out == chunks
    for c, v in zip(chunks, [1, 2, 3, 4], strict=True):
        assert c.finished and np.all(c.coords == v)
    with pytest.raises(ValueError, match="batch_size"):
        BatchQueue(network, 0)


def test_result_writer_uncrops_and_suppresses_per_image_when_its_last_chunk_is_in() -> None:
    from posefix.pipeline import RefineCounts, ResultWriter

    n = 4
    dets = Detections(np.array([7, 7, 7, 8]), np.zeros((n, SPEC.num_keypoints, 3)),
                      np.array([0.9, 0.8, 0.7, 0.6]), np.full((n, 4), np.nan),
                      np.ones(n, dtype=np.int64))
    counts = RefineCounts()
    writer = ResultWriter(dets, SPEC, "input", 0.9, counts)
    first = _chunk_of(2, 7, False, 0)
    first.rows = np.array([0, 1])
    first.coords[:] = 10.0  # two identical poses in image 7: one is a duplicate
    first.item["affine"][:, 0, 2] = -5.0  # crop = image shifted by 5 px
    writer.add(first)
    assert counts.suppressed_nms == 0  # image 7 is not complete yet
    second = _chunk_of(1, 7, True, 0)
    second.rows = np.array([2])
    second.coords[:] = 40.0
    writer.add(second)
    assert counts.suppressed_nms == 1 and counts.refined == 3
    result = writer.result()
    assert result.image_ids.tolist() == [7, 7, 8]  # row 1 suppressed, row 3 never refined
    np.testing.assert_allclose(result.keypoints[0, :, 0], 15.0)  # back in the image
    assert first.item == {"affine": None}  # the crops are freed


def test_quality_score_ranks_poses_the_network_finds_wrong_lower() -> None:
    """score='quality' (and 'auto' with an error head): input score x mean probability that
    the input keypoints are right; head-less networks keep the input score under 'auto'."""
    from posefix.pipeline import RefineCounts, ResultWriter

    n = 2
    dets = Detections(np.array([1, 2]), np.zeros((n, SPEC.num_keypoints, 3)),
                      np.array([0.8, 0.5]), np.full((n, 4), np.nan), np.ones(n, dtype=np.int64))
    chunk = _chunk_of(2, 1, True, 0)
    chunk.rows = np.array([0, 1])
    chunk.item["poses"][..., 2] = 1.0
    chunk.item["poses"][1, 0, 2] = 0.0  # an absent input keypoint does not count
    chunk.error = np.full((2, SPEC.num_keypoints), 0.25)
    chunk.error[1, 0] = 1.0
    for score, want in (("quality", [0.6, 0.375]), ("auto", [0.6, 0.375]),
                        ("input", [0.8, 0.5])):
        writer = ResultWriter(dets, SPEC, score, 0.0, RefineCounts())
        writer.add(_chunk_copy(chunk))
        np.testing.assert_allclose(writer.result().scores, want)
    plain = _chunk_copy(chunk)
    plain.error = None
    with pytest.raises(ValueError, match="error head"):
        ResultWriter(dets, SPEC, "quality", 0.0, RefineCounts()).add(_chunk_copy(plain))
    writer = ResultWriter(dets, SPEC, "auto", 0.0, RefineCounts())
    writer.add(plain)
    np.testing.assert_allclose(writer.result().scores, [0.8, 0.5])


def _chunk_copy(chunk: Any) -> Any:
    import copy

    return copy.deepcopy(chunk)


def _must_not_run(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("called again")


def test_refine_files_uses_what_the_preflight_read(tmp_path: Path, tiny_checkpoint: Path,
                                                   coco_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # `posefix refine` reads its inputs once: the ground truth and COCO results that
    # check_refine_inputs parsed (before torch) are what refine_files refines and scores,
    # even if the files change in between; an unknown image's detection is skipped with
    # the same warning either way.
    import warnings

    from posefix.commands.preflight import check_refine_inputs
    from posefix.commands.refine import refine_paths
    from posefix.options import RefinePaths

    gt, results = tmp_path / "gt.json", tmp_path / "in.json"
    gt.write_text((coco_dir / "test_coco.json").read_text())
    dets = json.loads((coco_dir / "blazepose_gtboxes.json").read_text())
    results.write_text(json.dumps([*dets, {**dets[0], "image_id": 99}]))
    o = RefineFileOptions(RefineOptions(workers=0, device="cpu"))
    checked = check_refine_inputs(RefinePaths(results, tmp_path / "o.json", coco_dir, gt,
                                              checkpoint=tiny_checkpoint), o)
    assert checked.truth is not None and len(checked.results) == len(dets) + 1
    assert checked.format == "coco"

    def run(name: str, **kw: Any) -> tuple[dict[str, Any], list[Any], list[str]]:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            s = refine_paths(RefinePaths(results, tmp_path / name, coco_dir, gt,
                                         checkpoint=tiny_checkpoint), o, **kw)
        return s, json.loads((tmp_path / name).read_text()), [str(w.message) for w in said]

    want, want_out, want_said = run("want.json")
    assert want_said == [f"{results}: skipped 1 detection(s) with an unknown image_id"]
    truth = json.loads(gt.read_text())
    truth["annotations"] = truth["annotations"][1:]
    gt.write_text(json.dumps(truth))
    results.write_text(json.dumps(dets[1:]))
    with monkeypatch.context() as m:  # the paths were checked: not again
        m.setattr("posefix.commands.refine.check_refine_paths", _must_not_run)
        got, got_out, got_said = run("o.json", checked=checked)
    assert got_out == want_out and got_said == want_said
    assert got["ap_before"] == want["ap_before"] and got["ap_after"] == want["ap_after"]
    assert got["error_changes"] == want["error_changes"]
    changed, changed_out, _ = run("changed.json")  # the changed files, read again
    assert len(changed_out) == len(dets) - 1 and changed["ap_before"] != want["ap_before"]
    with pytest.raises(ValueError, match="checked inputs are of"):  # another run's checks
        run("other.json", checked=checked)


def test_refine_paths_are_paths() -> None:
    from posefix.options import RefinePaths

    p = RefinePaths("in.json", "out.json", "images", gt="gt.json")
    assert p.results == Path("in.json") and p.gt == Path("gt.json") and p.report is None
    with pytest.raises(TypeError, match=r"RefinePaths\.images must be a path"):
        RefinePaths("in.json", "out.json", None)
    with pytest.raises(TypeError, match=r"RefinePaths\.gt must be a path"):
        RefinePaths("in.json", "out.json", "images", gt=3)


def test_group_by_image_chunks_rows_of_the_detections_as_they_are() -> None:
    from posefix.crops import group_by_image

    tasks = group_by_image(np.array([5, 3, 5, 7, 3, 5]), chunk=2)
    assert [(t.image_id, t.rows.tolist(), t.first, t.last) for t in tasks] == [
        (5, [0, 2], True, False), (5, [5], False, True), (3, [1, 4], True, True),
        (7, [3], True, True)]
    assert group_by_image(np.zeros(0, dtype=np.int64), chunk=2) == []


def test_posefix_refine_reads_the_results_and_the_ground_truth_once(
        tmp_path: Path, tiny_checkpoint: Path, coco_dir: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # the preflight hands the run what it loaded: each file is parsed once, however the
    # readers are reached (the readers' own file-level parsers are counted)
    from posefix import groundtruth, jsonfiles, results
    from posefix.cli import main

    reads: list[str] = []

    def counted(module: Any, name: str) -> None:
        real = getattr(module, name)

        def read(path: Any, *args: Any, **kwargs: Any) -> Any:
            reads.append(Path(path).name)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(module, name, read)

    counted(results, "iter_json_list")
    counted(groundtruth, "iter_json_object")
    counted(groundtruth, "read_json")
    counted(jsonfiles, "read_json")
    gt, dets = coco_dir / "test_coco.json", coco_dir / "blazepose_gtboxes.json"
    assert main(["refine", "--checkpoint", str(tiny_checkpoint), "--images", str(coco_dir),
                 "--results", str(dets), "--gt", str(gt), "--out", str(tmp_path / "o.json"),
                 "--device", "cpu", "--workers", "0", "--json"]) == 0
    capsys.readouterr()
    assert sorted(reads) == sorted([gt.name, dets.name])


def test_refine_files_with_default_options_runs_the_flip_test(tmp_path: Path,
                                                              tiny_checkpoint: Path) -> None:
    """RefineOptions' flip and device default to None ("the refiner's own"): the refiner
    refine_files builds from them runs the flip test on ``auto``, as posefix refine does."""
    rng = np.random.default_rng(11)
    imgs, listing, results = _write_set(tmp_path, rng)
    kw = dict(checkpoint=tiny_checkpoint, images=imgs, results=results, image_list=listing)
    s = refine_files(out=tmp_path / "o.json", options=RefineFileOptions(RefineOptions(
        workers=0, skip_missing=True)), **kw)
    assert s["flip"] is True
    off = refine_files(out=tmp_path / "off.json", options=RefineFileOptions(RefineOptions(
        workers=0, skip_missing=True, flip=False)), **kw)
    assert off["flip"] is False
