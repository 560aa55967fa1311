"""The ``posefix evaluate`` console script on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from posefix.evaluate import STAT_NAMES
from posefix.io import load_ground_truth

REPO = Path(__file__).resolve().parents[1]
POSEFIX = Path(sys.executable).parent / "posefix"

pytestmark = pytest.mark.slow


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(POSEFIX), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def gt_results(coco_dir: Path, tmp_path: Path) -> Path:
    """Results made from the ground truth itself (every labelled person, score 1)."""
    gt = load_ground_truth(coco_dir / "test_coco.json")
    res = [{"image_id": int(gt.image_ids[r]), "category_id": 1,
            "keypoints": gt.keypoints[r].ravel().tolist(), "score": 1.0}
           for r in range(len(gt)) if gt.num_labelled[r] > 0]
    path = tmp_path / "from_gt.json"
    path.write_text(json.dumps(res))
    return path


def test_console_script_is_installed() -> None:
    assert POSEFIX.is_file(), POSEFIX
    out = run("evaluate", "--help")
    assert out.returncode == 0 and "--results" in out.stdout


def test_results_made_from_ground_truth_score_one(coco_dir: Path, tmp_path: Path) -> None:
    out = run("evaluate", "--gt", coco_dir / "test_coco.json", "--results",
              gt_results(coco_dir, tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert stats["num_detections"] == stats["num_ground_truth"] == 12


def test_blazepose_json_keys_and_table() -> None:
    gt, res = "tests/data/coco/test_coco.json", "tests/data/coco/blazepose_gtboxes.json"
    out = run("evaluate", "--gt", gt, "--results", res, "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert set(stats) == {*STAT_NAMES, "num_images", "num_ground_truth", "num_detections",
                          "skipped_unknown_image", "spec", "gt", "results"}
    assert round(stats["AP"], 3) == 0.532 and stats["spec"] == "coco17"
    text = run("evaluate", "--gt", gt, "--results", res)
    assert text.returncode == 0
    assert "AP      Average Precision  0.50:0.95  all          20   0.532" in text.stdout


def test_posetrack_without_area_evaluates(data_dir: Path) -> None:
    out = run("evaluate", "--gt", data_dir / "posetrack18/annotations/test_posetrack18_val.json",
              "--results", data_dir / "posetrack18/blazepose_gtboxes.json", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spec"] == "posetrack17"


def test_unknown_image_ids_skipped_or_an_error_with_strict(coco_dir: Path,
                                                           tmp_path: Path) -> None:
    res = json.loads((coco_dir / "blazepose_gtboxes.json").read_text())
    res[4]["image_id"] = 31337
    path = tmp_path / "res.json"
    path.write_text(json.dumps(res))
    out = run("evaluate", "--gt", coco_dir / "test_coco.json", "--results", path, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["skipped_unknown_image"] == 1
    assert "skipped 1 detection" in out.stderr
    out = run("evaluate", "--gt", coco_dir / "test_coco.json", "--results", path, "--strict")
    assert out.returncode == 2 and out.stdout == ""
    assert f"{path}: entry 4: field 'image_id': unknown image_id 31337" in out.stderr


@pytest.mark.parametrize("content,words", [
    ('[{"image_id": 785, "category_id": 1, "keypoints": [NaN', "not valid JSON"),
    ("", "file is empty"),
    (json.dumps([{"image_id": 785, "keypoints": [0.0] * 51, "score": -1}]),
     "entry 0: field 'score': must not be negative"),
    (json.dumps([{"image_id": 785, "keypoints": [0.0] * 50 + [float("nan")], "score": 1}]),
     "entry 0: field 'keypoints': has a NaN"),
    (json.dumps([{"image_id": 785, "keypoints": [0.0] * 42, "score": 1}]),
     "entry 0: field 'keypoints': has 42 values"),
])
def test_bad_results_exit_2_naming_the_file(coco_dir: Path, tmp_path: Path, content: str,
                                            words: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = run("evaluate", "--gt", coco_dir / "test_coco.json", "--results", path)
    assert out.returncode == 2
    assert out.stderr.startswith(f"posefix evaluate: error: {path}") and words in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_ground_truth_exits_2(coco_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    out = run("evaluate", "--gt", missing, "--results", coco_dir / "blazepose_gtboxes.json")
    assert out.returncode == 2 and f"{missing}: file does not exist" in out.stderr
    out = run("evaluate", "--gt", coco_dir / "test_coco.json", "--results",
              coco_dir / "blazepose_gtboxes.json", "--spec", "crowdpose14")
    assert out.returncode == 2 and str(coco_dir / "test_coco.json") in out.stderr
    assert "spec crowdpose14 needs 42" in out.stderr


def test_split_restricts_the_ground_truth_to_its_images(shared_data: Path,
                                                        tmp_path: Path) -> None:
    # LSP's coco17.json holds both splits; PoseNet's results cover the test split only, so
    # without --split the 1,000 training persons would all count as missed.
    gt = shared_data / "lsp" / "coco17.json"
    results = shared_data / "lsp" / "posenet_gtboxes.json"
    whole = json.loads(run("evaluate", "--gt", gt, "--results", results, "--json").stdout)
    test = json.loads(run("evaluate", "--gt", gt, "--results", results, "--json",
                          "--split", "test").stdout)
    assert (whole["num_images"], whole["num_ground_truth"]) == (1800, 1800)
    assert (test["num_images"], test["num_ground_truth"]) == (800, 800)
    assert whole["AR"] < 0.5 * test["AR"]
    # The split's AP is what the split alone as a file gives.
    data = json.loads(gt.read_text())
    ids = {im["id"] for im in data["images"] if im["split"] == "test"}
    alone = tmp_path / "test_only.json"
    alone.write_text(json.dumps({**data, "images": [im for im in data["images"]
                                                    if im["id"] in ids],
                                 "annotations": [a for a in data["annotations"]
                                                 if a["image_id"] in ids]}))
    ref = json.loads(run("evaluate", "--gt", alone, "--results", results, "--json").stdout)
    assert all(ref[k] == test[k] for k in STAT_NAMES)
    proc = run("analyze", "--gt", gt, "--results", results, "--split", "val")
    assert proc.returncode == 2
    assert "coco17.json" in proc.stderr and "no image has split 'val'" in proc.stderr
