"""posefix refine --video and visualize --video: a short clip written here with OpenCV,
round-tripped; the same numbers as in-memory refinement of the decoded frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import posefix
from posefix.cli import main
from posefix.images import load_image

SAMPLE = Path(posefix.__file__).parent / "assets" / "sample"
FRAMES = 5
EMPTY = 3  # a frame without detections


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    """A 5-frame clip of a sample image panning right, and MoveNet's poses moved along
    (COCO results, image id = frame index)."""
    folder = tmp_path_factory.mktemp("clip")
    image = load_image(SAMPLE / "000000196141.jpg")[:424, :632]  # even sides for the codec
    people = [d for d in json.loads((SAMPLE / "movenet.json").read_text())
              if d["image_id"] == 196141]
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (image.shape[1], image.shape[0]))
    results, poses = [], []
    for f in range(FRAMES):
        writer.write(np.roll(image, 4 * f, axis=1)[..., ::-1].copy())
        kp = np.array([d["keypoints"] for d in people]).reshape(-1, 17, 3)
        kp[..., 0] = np.where(kp[..., 2] > 0, kp[..., 0] + 4 * f, 0)
        poses.append(kp)
        if f != EMPTY:
            results += [{"image_id": f, "category_id": 1, "keypoints": k.reshape(-1).tolist(),
                         "score": d["score"]} for k, d in zip(kp, people, strict=True)]
    writer.release()
    (folder / "per_frame.json").write_text(json.dumps(results))
    return folder / "clip.mp4", folder / "per_frame.json", poses


def test_refine_video_equals_in_memory_refinement_of_its_frames(
        clip: tuple[Path, Path, list[np.ndarray]], tmp_path: Path) -> None:
    video, results, poses = clip
    out = tmp_path / "refined.json"
    assert main(["refine", "--video", str(video), "--results", str(results), "--out", str(out),
                 "--device", "cpu", "--error-gate", "0", "--backend", "torch"]) == 0
    got = json.loads(out.read_text())
    assert sorted({d["image_id"] for d in got}) == [f for f in range(FRAMES) if f != EMPTY]
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(FRAMES)]  # decoded, BGR
    cap.release()
    refiner = posefix.Refiner.from_checkpoint(backend="torch", device="cpu", error_gate=0)
    keep = [f for f in range(FRAMES) if f != EMPTY]
    mine = refiner.refine_images([frames[f] for f in keep], [poses[f] for f in keep],
                                 [np.array([0.5] * len(poses[f])) for f in keep], color="bgr")
    for f, res in zip(keep, mine, strict=True):
        rows = [d for d in got if d["image_id"] == f]
        assert len(rows) == res.kept.sum()
        np.testing.assert_allclose(np.array([d["keypoints"] for d in rows]),
                                   res.keypoints[res.kept].reshape(len(rows), -1), atol=6e-5)
        assert np.abs(res.keypoints[..., :2] - poses[f][..., :2]).max() > 1  # refined
    # the side-by-side as a video: every frame, two panels
    drawn = tmp_path / "side.avi"
    assert main(["visualize", "--video", str(video), "--results", f"input={results}",
                 "--results", f"refined={out}", "--out", str(drawn)]) == 0
    cap = cv2.VideoCapture(str(drawn))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        assert frame.shape[1] > 2 * 600
    cap.release()
    assert n == FRAMES


def test_refine_video_frames_past_the_end(clip: tuple[Path, Path, list[np.ndarray]],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    video, results, poses = clip
    late = tmp_path / "late.json"
    late.write_text(json.dumps({"7": poses[0].tolist(), "1": poses[1].tolist()}))  # arrays
    out = tmp_path / "out.json"
    args = ["refine", "--video", str(video), "--results", str(late), "--out", str(out),
            "--device", "cpu"]
    assert main(args) == 2
    assert "past the video's last frame 4" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--skip-missing", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_missing_image"] == len(poses[0]) == summary["refined"]
    assert main([*args, "--gt", str(SAMPLE / "annotations.json")]) == 2


def test_refine_video_from_openpose_frame_files(clip: tuple[Path, Path, list[np.ndarray]],
                                                tmp_path: Path) -> None:
    """OpenPose on a video writes <video>_<frame, 12 digits>_keypoints.json: the number that
    ends the name is the frame. Same output as the COCO per-frame results."""
    from posefix.spec import convert_layout, load_spec

    video, results, poses = clip
    body25, coco = load_spec("body25"), load_spec("coco17")
    folder = tmp_path / "openpose"
    folder.mkdir()
    for f, kp in enumerate(poses):
        people = [] if f == EMPTY else [
            {"person_id": [-1], "pose_keypoints_2d": convert_layout(p[None], coco, body25, zero_ignored=False)
             .reshape(-1).tolist()} for p in kp]
        (folder / f"clip_{f:012d}_keypoints.json").write_text(
            json.dumps({"version": 1.3, "people": people}))
    common = ["--video", str(video), "--device", "cpu", "--score", "input", "--nms", "0"]
    assert main(["refine", "--results", str(folder), "--out", str(tmp_path / "a.json"),
                 *common]) == 0
    assert main(["refine", "--results", str(results), "--out", str(tmp_path / "b.json"),
                 *common]) == 0
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert [d["image_id"] for d in a] == [d["image_id"] for d in b] and len(a) == 16
    np.testing.assert_allclose([d["keypoints"] for d in a], [d["keypoints"] for d in b])


def test_refine_video_refuses_to_write_over_its_inputs(
        clip: tuple[Path, Path, list[np.ndarray]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    video, results, _ = clip
    copies = {name: tmp_path / p.name for name, p in (("results", results), ("video", video))}
    for p, src in zip(copies.values(), (results, video), strict=True):
        p.write_bytes(src.read_bytes())
    for name, out in copies.items():
        before = out.read_bytes()
        assert main(["refine", "--video", str(copies["video"]), "--results",
                     str(copies["results"]), "--out", str(tmp_path / "." / out.name),
                     "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert f"refusing to write over the input {name} file" in err and str(out) in err
        assert out.read_bytes() == before


def test_refine_video_checks_its_output_before_refining(
        clip: tuple[Path, Path, list[np.ndarray]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from posefix.commands.refine import refine_video_file
    from posefix.options import RefineFileOptions

    video, results, _ = clip
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main(["refine", "--video", str(video), "--results", str(results), "--out",
                 str(folder), "--device", "cpu"]) == 2
    assert "is a folder; --out must be a file path" in capsys.readouterr().err
    with pytest.raises(ValueError, match="out_format must be one of coco, arrays"):
        refine_video_file(None, video, results, tmp_path / "out.json",
                          RefineFileOptions(out_format="yaml"))
    assert not (tmp_path / "out.json").exists()


def test_refine_video_writes_arrays_keyed_as_its_input(
        clip: tuple[Path, Path, list[np.ndarray]], tmp_path: Path) -> None:
    # --out-format arrays: the input's own keys (names ending in the frame number), and
    # the keypoints of the COCO output of the same refinement
    video, results, poses = clip
    arrays = tmp_path / "arrays.json"
    arrays.write_text(json.dumps({f"clip_{f:04d}": {"keypoints": kp.tolist(),
                                                   "scores": [0.5] * len(kp)}
                                  for f, kp in enumerate(poses) if f != EMPTY}))
    common = ["--video", str(video), "--device", "cpu", "--score", "input"]
    assert main(["refine", "--results", str(arrays), "--out", str(tmp_path / "a.json"),
                 "--out-format", "arrays", *common]) == 0
    assert main(["refine", "--results", str(results), "--out", str(tmp_path / "c.json"),
                 *common]) == 0
    got = json.loads((tmp_path / "a.json").read_text())
    coco = json.loads((tmp_path / "c.json").read_text())
    assert list(got) == [f"clip_{f:04d}" for f in range(FRAMES) if f != EMPTY]
    for f in range(FRAMES):
        if f != EMPTY:
            want = [d["keypoints"] for d in coco if d["image_id"] == f]
            np.testing.assert_allclose(np.reshape(got[f"clip_{f:04d}"]["keypoints"],
                                                  (len(want), -1)), want, atol=1e-4)
