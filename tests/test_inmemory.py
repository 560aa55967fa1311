"""In-memory refinement (posefix.Refiner.refine_image/refine_images): the same numbers as
``posefix refine`` on the same images and poses, with the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import posefix
from posefix.cli import main
from posefix.images import load_image

SAMPLE = Path(posefix.__file__).parent / "assets" / "sample"


@pytest.fixture(scope="module")
def refiner() -> posefix.Refiner:
    return posefix.Refiner.from_checkpoint()  # the shipped model, on the default backend


@pytest.fixture(scope="module")
def ungated() -> posefix.Refiner:
    """The shipped model on PyTorch refining every keypoint (its gate keeps most sample
    keypoints)."""
    return posefix.Refiner.from_checkpoint(backend="torch", device="cpu", error_gate=0)


def _by_image(results: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for d in results:
        out.setdefault(int(d["image_id"]), []).append(d)
    return out


@pytest.mark.parametrize("name", ["movenet.json", "blazepose.json"])
def test_in_memory_equals_the_file_cli_on_the_embedded_sample(
        ungated: posefix.Refiner, tmp_path: Path, name: str) -> None:
    out = tmp_path / "refined.json"
    assert main(["refine", "--images", str(SAMPLE), "--results", str(SAMPLE / name),
                 "--image-list", str(SAMPLE / "annotations.json"), "--out", str(out),
                 "--workers", "0", "--device", "cpu", "--batch-size", "4", "--error-gate", "0",
                 "--backend", "torch"]) == 0  # the in-memory refiner below is PyTorch's
    files = _by_image(json.loads(out.read_text()))
    inputs = _by_image(json.loads((SAMPLE / name).read_text()))
    infos = {im["id"]: im for im in json.loads((SAMPLE / "annotations.json").read_text())["images"]}
    ids = list(inputs)
    images = [load_image(SAMPLE / infos[i]["file_name"]) for i in ids]
    kps = [np.array([d["keypoints"] for d in inputs[i]]).reshape(len(inputs[i]), -1, 3)
           for i in ids]
    scores = [np.array([d["score"] for d in inputs[i]]) for i in ids]
    got = ungated.refine_images(images, kps, scores, batch_size=4)
    moved = 0
    for i, kp_in, res in zip(ids, kps, got, strict=True):
        assert res.keypoints.shape == kp_in.shape and res.refined.all()
        want = files.get(i, [])
        assert res.kept.sum() == len(want)
        np.testing.assert_allclose(
            res.keypoints[res.kept].reshape(len(want), -1),
            np.array([d["keypoints"] for d in want]).reshape(len(want), -1), atol=6e-5)
        np.testing.assert_allclose(res.scores[res.kept], [d["score"] for d in want],
                                   rtol=1e-12)
        # the shipped model has an error head: probabilities per input keypoint
        assert res.error is not None and res.error.shape == kp_in.shape[:2]
        assert np.all((res.error >= 0) & (res.error <= 1))
        moved += int(np.abs(res.keypoints[..., :2] - kp_in[..., :2]).max() > 1)
    assert moved > 0  # the network moved keypoints: the comparison is not of inputs


@pytest.mark.parametrize("name", ["movenet.json", "blazepose.json"])
def test_the_api_and_the_cli_give_the_same_keypoints_with_the_defaults_of_each(
        refiner: posefix.Refiner, tmp_path: Path, name: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 29: ``Refiner.from_checkpoint()`` runs what ``posefix refine`` runs by default
    (the backend ``auto`` chooses), so a user's frame loop and the command line agree to
    0.01 px; ``to_coco`` gives the entries the command writes."""
    from posefix.backends import choose_backend, int8_without_saturation

    out = tmp_path / "refined.json"
    assert main(["refine", "--images", str(SAMPLE), "--results", str(SAMPLE / name),
                 "--image-list", str(SAMPLE / "annotations.json"), "--out", str(out),
                 "--json"]) == 0  # every setting the CLI's default
    summary = json.loads(capsys.readouterr().out)
    chosen = choose_backend("auto")
    if chosen == "onnxruntime" and int8_without_saturation():
        chosen = "onnxruntime-int8"  # the shipped calibration set fits the shipped model
    assert refiner.backend == chosen and summary["backend"] == refiner.description
    files = _by_image(json.loads(out.read_text()))
    inputs = _by_image(json.loads((SAMPLE / name).read_text()))
    infos = {im["id"]: im for im in json.loads((SAMPLE / "annotations.json").read_text())["images"]}
    moved = 0
    for i, people in inputs.items():
        kp = np.array([d["keypoints"] for d in people]).reshape(len(people), -1, 3)
        got = refiner.refine_image(load_image(SAMPLE / infos[i]["file_name"]), kp,
                                   np.array([d["score"] for d in people]))  # one by one
        want = files.get(i, [])
        entries = got.to_coco(i)
        assert [sorted(e) for e in entries] == [sorted(d) for d in want]
        assert [e["image_id"] for e in entries] == [d["image_id"] for d in want]
        if not want:
            continue
        np.testing.assert_allclose(np.array([e["keypoints"] for e in entries]),
                                   np.array([d["keypoints"] for d in want]), atol=0.01, rtol=0)
        np.testing.assert_allclose([e["score"] for e in entries], [d["score"] for d in want],
                                   atol=1e-4, rtol=0)
        moved += int(np.abs(got.keypoints[..., :2] - kp[..., :2]).max() > 1)
    assert moved > 0  # the network moved keypoints: the comparison is not of inputs


def test_a_backend_asked_for_is_the_one_that_runs() -> None:
    torch_r = posefix.Refiner.from_checkpoint(backend="torch", device="cpu")
    float32 = posefix.Refiner.from_checkpoint(backend="onnxruntime")
    assert (torch_r.backend, torch_r.arrays) == ("torch", False)
    assert (float32.backend, float32.arrays) == ("onnxruntime", True)
    assert "onnxruntime, the export of" in float32.description
    assert repr(float32).startswith("Refiner(onnxruntime on cpu, coco17, 128x96 crops")
    with pytest.raises(ValueError, match="backend must be one of"):
        posefix.Refiner.from_checkpoint(backend="tensorflow")
    with pytest.raises(ValueError, match="needs backend torch"):
        posefix.Refiner.from_checkpoint(backend="onnxruntime", device="cuda")


def test_one_image_rgb_or_bgr_and_two_column_keypoints(ungated: posefix.Refiner) -> None:
    refiner = ungated
    inputs = _by_image(json.loads((SAMPLE / "movenet.json").read_text()))
    image = load_image(SAMPLE / "000000196141.jpg")  # in colour (000000040083 is grey)
    kp = np.array([d["keypoints"] for d in inputs[196141]]).reshape(-1, 17, 3)
    rgb = refiner.refine_image(image, kp)
    bgr = refiner.refine_image(image[..., ::-1], kp, color="bgr")
    np.testing.assert_array_equal(rgb.keypoints, bgr.keypoints)
    np.testing.assert_array_equal(rgb.scores, bgr.scores)
    wrong = refiner.refine_image(image[..., ::-1], kp)  # BGR read as RGB: other numbers
    assert not np.array_equal(wrong.keypoints, rgb.keypoints)
    assert not np.array_equal(wrong.error, rgb.error)
    xy = kp[..., :2] * (kp[..., 2:] > 0)  # x, y only: every non-zero keypoint is present
    assert refiner.refine_image(image, xy).keypoints.shape == kp.shape
    assert refiner.refine_images([], []) == []


def test_in_memory_input_errors(refiner: posefix.Refiner) -> None:
    image = np.zeros((50, 40, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(N, 17, 2 or 3\)"):
        refiner.refine_image(image, np.zeros((1, 14, 3)))
    with pytest.raises(ValueError, match="uint8"):
        refiner.refine_image(image.astype(np.float32), np.zeros((1, 17, 3)))
    with pytest.raises(ValueError, match="color"):
        refiner.refine_image(image, np.zeros((1, 17, 3)), color="hsv")
    with pytest.raises(ValueError, match="scores"):
        refiner.refine_image(image, np.zeros((2, 17, 3)), np.ones(3))
    # nothing inside the image: kept unchanged, not refined
    kp = np.full((1, 17, 3), 500.0)
    res = refiner.refine_image(image, kp)
    assert not res.refined[0] and res.kept[0]
    np.testing.assert_array_equal(res.keypoints, kp)


@pytest.mark.parametrize(("page", "section", "most_lines"), [
    ("README.md", "## Refine your own estimator's output", 12),
    ("docs/python.md", "## Poses in memory", 20)])
def test_the_docs_python_examples_run_as_written(page: str, section: str, most_lines: int,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parents[1] / page).read_text()
    code = text.split(section + "\n", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len([line for line in code.splitlines() if line.strip()]) <= most_lines
    exec(compile(code, page, "exec"), {})
    assert capsys.readouterr().out.startswith("(4, 17, 3)")  # the four MoveNet persons


@pytest.mark.parametrize("option", [{"flip": False}, {"device": "meta"}])
def test_a_refiners_own_flip_and_device_are_not_overridden_silently(
        ungated: posefix.Refiner, option: dict) -> None:
    # refine() and refine_images treat flip/device alike: the Refiner's own value (or
    # none) passes; another value is a ValueError naming it, not silently ignored.
    from posefix.io import Detections
    from posefix.options import RefineOptions
    from posefix.refine import refine

    image = load_image(SAMPLE / json.loads(
        (SAMPLE / "annotations.json").read_text())["images"][0]["file_name"])
    kp = np.array([d["keypoints"] for d in json.loads((SAMPLE / "movenet.json").read_text())
                   ][:1], np.float32).reshape(1, -1, 3)
    dets = Detections(np.zeros(1, np.int64), kp.astype(np.float64), np.ones(1),
                      np.full((1, 4), np.nan), np.ones(1, np.int64))
    name = next(iter(option))
    said = rf"{name}=.*this Refiner was built with its own"
    with pytest.raises(ValueError, match=said):
        ungated.refine_images([image], [kp], **option)
    with pytest.raises(ValueError, match=said):
        refine(dets, {0: image}.__getitem__, ungated, options=RefineOptions(workers=0, **option))
    own = {"flip": ungated.flip, "device": str(ungated.device)}[name]
    got = ungated.refine_images([image], [kp], **{name: own})[0]
    refined = refine(dets, {0: image}.__getitem__, ungated,
                     options=RefineOptions(workers=0, nms=0, **{name: own}))
    assert got.keypoints.shape == refined.keypoints.shape
