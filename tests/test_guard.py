"""Issue 27: no verb writes over its inputs or starts work it cannot write out; every bad
option and every bad input is one ``posefix VERB: error:`` line with exit 2.

Each verb runs in this process (``posefix.cli.main``): the guard acts before any model is
loaded, so these run in well under a second each.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from posefix import cli
from posefix.cli import main
from posefix.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "posefix" / "assets" / "sample"
GT = SAMPLE / "annotations.json"
RESULTS = SAMPLE / "blazepose.json"


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """(exit status, stderr) of ``posefix ARGS``; argparse's exits are caught."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = int(e.code) if isinstance(e.code, int) else 1
    return rc, capsys.readouterr().err


def _one_error_line(err: str, verb: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"posefix {verb}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def copies(tmp_path: Path) -> dict[str, Path]:
    """The sample's ground truth and results, copied (they may be written over)."""
    return {"gt": Path(shutil.copy(GT, tmp_path / "gt.json")),
            "results": Path(shutil.copy(RESULTS, tmp_path / "results.json"))}


def _links(tmp_path: Path, target: Path) -> list[Path]:
    """``target`` itself, a symbolic link to it and a hard link to it."""
    sym, hard = tmp_path / "sym.json", tmp_path / "hard.json"
    sym.symlink_to(target)
    os.link(target, hard)
    return [target, sym, hard]


# --------------------------------------------------------------------------- data loss
def test_synthesize_refuses_to_write_over_its_ground_truth(
        copies: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = copies["gt"].read_bytes()
    for out in _links(tmp_path, copies["gt"]):
        rc, err = _run(capsys, "synthesize", "--gt", copies["gt"], "--out", out)
        assert rc == 2 and "refusing to write over the input gt file" in _one_error_line(
            err, "synthesize")
    assert copies["gt"].read_bytes() == before


@pytest.mark.parametrize("which", ["gt", "results"])
def test_analyze_refuses_to_fit_a_profile_over_an_input(
        which: str, copies: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = copies[which].read_bytes()
    for out in _links(tmp_path, copies[which]):
        rc, err = _run(capsys, "analyze", "--gt", copies["gt"], "--results",
                       copies["results"], "--fit-profile", out)
        assert rc == 2 and f"input {which} file" in _one_error_line(err, "analyze")
    assert copies[which].read_bytes() == before


def test_export_refuses_to_write_over_its_checkpoint(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not even a checkpoint")  # refused before it is read
    for out in _links(tmp_path, ckpt):
        rc, err = _run(capsys, "export", "--checkpoint", ckpt, "--onnx", out)
        assert rc == 2 and "input checkpoint file" in _one_error_line(err, "export")
    assert ckpt.read_bytes() == b"not even a checkpoint"


def test_visualize_video_refuses_to_write_over_its_video(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"frames")
    for out in [video, tmp_path / "link.mp4"]:
        if out != video:
            out.symlink_to(video)
        rc, err = _run(capsys, "visualize", "--video", video, "--out", out)
        assert rc == 2 and "input video file" in _one_error_line(err, "visualize")
    assert video.read_bytes() == b"frames"


def test_visualize_refuses_its_image_folder_as_out(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "visualize", "--images", SAMPLE, "--gt", GT, "--out", SAMPLE)
    assert rc == 2 and "input images file" in _one_error_line(err, "visualize")


def test_a_picture_is_never_written_over_an_input(tmp_path: Path) -> None:
    from posefix.outputs import check_written

    image = tmp_path / "im1.png"
    image.write_bytes(b"png")
    with pytest.raises(InputError, match="refusing to write over the input image file"):
        check_written(tmp_path / "im1.png", {"image": image})
    assert check_written(tmp_path / "im2.png", {"image": image}) == tmp_path / "im2.png"


def test_refine_refuses_a_file_of_its_openpose_folder(tmp_path: Path) -> None:
    folder = tmp_path / "openpose"
    folder.mkdir()
    (folder / "a_keypoints.json").write_text('{"people": []}')
    from posefix.outputs import check_outputs, folder_inputs

    with pytest.raises(InputError, match="input results file"):
        check_outputs({"--out": folder / "a_keypoints.json"},
                      inputs={"results": folder_inputs(folder)})


def test_same_file_through_links(tmp_path: Path) -> None:
    from posefix.outputs import same_file

    a = tmp_path / "a.json"
    a.write_text("[]")
    target, sym, hard = _links(tmp_path, a)
    assert same_file(a, sym) and same_file(a, hard) and same_file(sym, hard)
    assert not same_file(a, tmp_path / "b.json")


# --------------------------------------------------------------------------- unwritable
def _unwritable(tmp_path: Path) -> list[Path]:
    """Outputs no verb can write: under a file, and in /proc (a read-only file system
    even for root)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return [blocker / "out.json", Path("/proc/posefix-out.json")]


@pytest.mark.parametrize("verb", ["synthesize", "analyze", "refine", "export", "visualize",
                                  "visualize-video", "demo"])
def test_an_unwritable_output_is_refused_before_any_work(
        verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"frames")
    for out in _unwritable(tmp_path):
        args = {
            "synthesize": ["synthesize", "--gt", GT, "--out", out],
            "analyze": ["analyze", "--gt", GT, "--results", RESULTS, "--fit-profile", out],
            "refine": ["refine", "--images", SAMPLE, "--gt", GT, "--results", RESULTS,
                       "--out", out],
            "export": ["export", "--onnx", out.with_suffix(".onnx")],
            "visualize": ["visualize", "--images", SAMPLE, "--gt", GT, "--out", out.parent
                          / "pictures"],
            "visualize-video": ["visualize", "--video", video, "--out", out.with_suffix(".mp4")],
            "demo": ["demo", "--out", out.parent / "demo"],
        }[verb]
        rc, err = _run(capsys, *args)
        line = _one_error_line(err, args[0])
        assert rc == 2 and "cannot write" in line, line
    assert not (tmp_path / "a-file").is_dir()


def test_a_folder_is_refused_where_a_file_is_written(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "synthesize", "--gt", GT, "--out", tmp_path)
    assert rc == 2 and "is a folder; --out must be a file path" in _one_error_line(
        err, "synthesize")


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize("option,value", [
    ("--batch-size", "0"), ("--batch-size", "-3"), ("--nms", "2"), ("--nms", "nan"),
    ("--nms", "-0.5"), ("--nms", "inf"), ("--workers", "-1"), ("--workers", "10000"),
    ("--device", "banana"), ("--error-gate", "1.5"), ("--error-blend", "nan"),
])
def test_refine_options_are_ranged_when_parsed(option: str, value: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "refine", "--images", SAMPLE, "--gt", GT, "--results", RESULTS,
                   "--out", tmp_path / "never.json", option, value)
    line = _one_error_line(err, "refine")
    assert rc == 2 and f"argument {option}: must be" in line or "unknown device" in line, line
    assert not (tmp_path / "never.json").exists()


def test_device_the_machine_lacks_names_the_devices_it_has(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "refine", "--images", SAMPLE, "--gt", GT, "--results", RESULTS,
                   "--out", tmp_path / "never.json", "--device", "cuda:99")
    line = _one_error_line(err, "refine")
    assert rc == 2 and "not on this machine (it has: cpu" in line, line


@pytest.mark.parametrize("args", [
    ["visualize", "--images", SAMPLE, "--out", "never", "--max-side", "-5"],
    ["visualize", "--images", SAMPLE, "--out", "never", "--max-side", "8"],
    ["visualize", "--images", SAMPLE, "--out", "never", "--max-images", "0"],
    ["visualize", "--images", SAMPLE, "--out", "never", "--min-score", "nan"],
    ["synthesize", "--gt", GT, "--out", "never.json", "--seed", "-1"],
    ["export", "--onnx", "never.onnx", "--opset", "3"],
])
def test_other_verbs_options_are_ranged(args: list, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # "never": nothing may be written, even where it is wrong
    rc, err = _run(capsys, *args)
    assert rc == 2 and "must be" in _one_error_line(err, args[0])


def test_ranges_are_shown_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["refine", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("OKS-NMS threshold in [0, 1]", "1 to 65536", "0 to 64",
                  "in [0, 1] (0: refine every keypoint"):
        assert shown in out, shown


def test_box_bbox_without_bboxes_is_refused(tmp_path: Path) -> None:
    from posefix.commands.refine import _boxes_given
    from posefix.io import load_results

    dets = load_results(SAMPLE / "movenet.json", "coco17")
    dets.boxes[:] = np.nan
    with pytest.raises(InputError, match="--box bbox: none of the"):
        _boxes_given(dets, "bbox", "movenet.json")
    dets.boxes[0] = [1, 2, 30, 40]
    with pytest.warns(UserWarning, match="have no 'bbox'"):
        assert _boxes_given(dets, "bbox", "movenet.json") == 1
    assert _boxes_given(dets, "pose", "movenet.json") is None


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_sample", interrupted)
    rc, err = _run(capsys, "sample")
    assert rc == 130 and err.strip().splitlines() == [
        "posefix sample: interrupted (nothing half-written is left)"]


# --------------------------------------------------------------------------- inputs
def test_random_bytes_are_one_line_in_every_reading_verb(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.json"
    junk.write_bytes(np.random.default_rng(27).integers(0, 256, 1 << 16, np.uint8).tobytes())
    for args in (["evaluate", "--gt", GT, "--results", junk],
                 ["analyze", "--gt", GT, "--results", junk],
                 ["evaluate", "--gt", junk, "--results", RESULTS],
                 ["synthesize", "--gt", junk, "--out", tmp_path / "s.json"],
                 ["synthesize", "--gt", GT, "--out", tmp_path / "s.json", "--trainset-results",
                  junk],
                 ["refine", "--images", SAMPLE, "--gt", GT, "--results", junk, "--out",
                  tmp_path / "r.json"]):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "not UTF-8 text" in _one_error_line(err, args[0]), args


def test_a_binary_file_in_an_openpose_folder(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "openpose"
    folder.mkdir()
    (folder / "000000040083_keypoints.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    for args in (["evaluate", "--gt", GT, "--results", folder],
                 ["refine", "--images", SAMPLE, "--gt", GT, "--results", folder, "--out",
                  tmp_path / "r.json"]):
        rc, err = _run(capsys, *args)
        assert rc == 2 and "not UTF-8 text" in _one_error_line(err, args[0])


def _gt_with(tmp_path: Path, change: dict) -> Path:
    data = json.loads(GT.read_text())
    for where, value in change.items():
        kind, field = where.split(".")
        data[kind][0][field] = value
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change,words", [
    ({"images.width": "wide"}, "entry 0: field 'images.width': must be a number"),
    ({"images.id": "1803"}, "field 'images.id': must be an integer, got a string"),
    ({"annotations.image_id": "40083"}, "field 'image_id': must be an integer, got a string"),
    ({"annotations.keypoints": [1e308] * 51}, "has a value beyond 1e+15"),
    ({"annotations.bbox": [1e308, 0, 1, 1]}, "field 'bbox': has a value beyond"),
    ({"annotations.area": 1e308}, "field 'area': has a value beyond"),
])
def test_ground_truth_fields_are_checked(change: dict, words: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    gt = _gt_with(tmp_path, change)
    rc, err = _run(capsys, "evaluate", "--gt", gt, "--results", RESULTS)
    line = _one_error_line(err, "evaluate")
    assert rc == 2 and str(gt) in line and words in line, line


@pytest.mark.parametrize("change,words", [
    ({"image_id": "40083"}, "entry 0: field 'image_id': must be an integer, got a string"),
    ({"keypoints": [1e308] * 51}, "entry 0: field 'keypoints': has a value beyond"),
    ({"bbox": [0, 0, 1e300, 1]}, "entry 0: field 'bbox': has a value beyond"),
    ({"category_id": "person"}, "entry 0: field 'category_id': must be an integer"),
])
def test_results_fields_are_checked(change: dict, words: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(RESULTS.read_text())
    data[0].update(change)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    for verb in ("evaluate", "refine"):
        extra = ["--images", SAMPLE, "--out", tmp_path / "r.json"] if verb == "refine" else []
        rc, err = _run(capsys, verb, "--gt", GT, "--results", path, *extra)
        line = _one_error_line(err, verb)
        assert rc == 2 and words in line, line
    assert not (tmp_path / "r.json").exists()


def test_empty_ground_truth_is_one_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(GT.read_text())
    data["annotations"] = []
    gt = tmp_path / "empty.json"
    gt.write_text(json.dumps(data))
    for args in (["evaluate", "--gt", gt, "--results", RESULTS],
                 ["analyze", "--gt", gt, "--results", RESULTS],
                 ["synthesize", "--gt", gt, "--out", tmp_path / "s.json"]):
        rc, err = _run(capsys, *args)
        line = _one_error_line(err, args[0])
        assert rc == 2 and "has no person with a labelled keypoint" in line, line
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage protobuf"])
def test_an_empty_or_corrupt_onnx_model(content: bytes, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    model = tmp_path / "model.onnx"
    model.write_bytes(content)
    from posefix.onnx_runner import OnnxRefiner

    with pytest.raises(InputError, match=str(model)):
        OnnxRefiner(model)
    if not content:
        rc, err = _run(capsys, "refine", "--images", SAMPLE, "--gt", GT, "--results", RESULTS,
                       "--out", tmp_path / "r.json", "--backend", "onnxruntime",
                       "--onnx", model)
        assert rc == 2 and "ONNX model file is empty" in _one_error_line(err, "refine")


def test_a_folder_given_for_a_file_says_so(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(capsys, "evaluate", "--gt", tmp_path, "--results", RESULTS)
    line = _one_error_line(err, "evaluate")
    assert rc == 2 and "is a folder" in line and "does not exist" not in line


# --------------------------------------------------------------------------- formats
def _openpose_folder(tmp_path: Path) -> Path:
    """The sample's ground truth as an OpenPose COCO-18 folder (no neck)."""
    from posefix.io import load_ground_truth
    from posefix.spec import load_spec

    gt = load_ground_truth(GT)
    source, target = load_spec("coco17"), load_spec("openpose18")
    index = target.mapping_from(source)
    folder = tmp_path / "openpose"
    folder.mkdir()
    for image_id, info in gt.images.items():
        people = []
        for r in gt.indices_of_image(image_id):
            kp = np.zeros((target.num_keypoints, 3))
            kp[index >= 0] = gt.keypoints[r][index[index >= 0]]
            kp[..., 2] = kp[..., 2] > 0
            people.append({"pose_keypoints_2d": kp.reshape(-1).tolist()})
        name = Path(info.file_name).stem + "_keypoints.json"
        (folder / name).write_text(json.dumps({"people": people}))
    return folder


def test_evaluate_analyze_visualize_read_an_openpose_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _openpose_folder(tmp_path)
    for given in ([], ["--format", "openpose"]):
        rc = main(["evaluate", "--gt", str(GT), "--results", str(folder), "--json", *given])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and out["AP"] > 0.9 and out["num_detections"] > 0
    rc = main(["analyze", "--gt", str(GT), "--results", str(folder), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["gt"] == str(GT)
    pictures = tmp_path / "pictures"
    rc = main(["visualize", "--images", str(SAMPLE), "--gt", str(GT), "--results",
               f"openpose={folder}", "--out", str(pictures), "--max-side", "64"])
    assert rc == 0 and len(list(pictures.glob("*.png"))) == 3
    mode = stat.S_IMODE((pictures / "000000040083.png").stat().st_mode)
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_written_video_gets_the_umask_mode(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    from posefix.video import write_video

    frames = [np.full((32, 48, 3), v, np.uint8) for v in (0, 128)]
    out = write_video(tmp_path / "side.mp4", frames, 25.0)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["side.mp4"]
