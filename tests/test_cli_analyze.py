"""The ``posefix analyze`` console script on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posefix.io import load_ground_truth
from posefix.similarity import ks_distance

REPO = Path(__file__).resolve().parents[1]
POSEFIX = Path(sys.executable).parent / "posefix"

pytestmark = pytest.mark.slow

REPORT_KEYS = {
    "spec", "oks_threshold", "num_images", "num_ground_truth", "num_detections", "matched",
    "unmatched_detections", "background_false_positives", "duplicates", "missed_ground_truth",
    "matched_to_ignored", "beyond_max_dets", "keypoints", "detections_with", "per_keypoint",
    "per_group", "ap", "ap_if_fixed", "pr_breakdown", "gt", "results", "skipped_unknown_image",
}


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(POSEFIX), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_blazepose_report_json() -> None:
    out = run("analyze", "--gt", "tests/data/coco/test_coco.json", "--results",
              "tests/data/coco/blazepose_gtboxes.json", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == REPORT_KEYS
    assert round(report["ap"]["AP"], 3) == 0.532 and report["oks_threshold"] == 0.1
    assert report["matched"] == 10 and report["missed_ground_truth"] == 2
    assert set(report["keypoints"]["counts"]) == {"good", "jitter", "inversion", "swap", "miss"}
    assert list(report["per_group"]) == ["face", "upper_body", "lower_body"]
    assert len(report["per_keypoint"]) == 17
    fixes = report["ap_if_fixed"]
    assert set(fixes) == {"alone", "cumulative", "background_false_positives"}
    assert list(fixes["alone"]) == ["miss", "swap", "inversion", "jitter"]
    assert fixes["cumulative"][-1]["AP"] > report["ap"]["AP"] + 0.2


def test_text_report_and_fitted_profile(coco_dir: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profiles" / "blazepose.yaml"
    out = run("analyze", "--gt", coco_dir / "test_coco.json", "--results",
              coco_dir / "blazepose_detboxes.json", "--fit-profile", profile)
    assert out.returncode == 0, out.stderr
    for words in ("keypoint errors", "per body group", "per keypoint", "AP if fixed",
                  "right_ankle", "miss + swap + inversion + jitter",
                  f"error profile written to {profile}"):
        assert words in out.stdout
    assert profile.is_file()
    from posefix.profile import load_profile

    assert load_profile(profile).group_names


def test_jittered_ground_truth_is_all_jitter(coco_dir: Path, tmp_path: Path) -> None:
    gt = load_ground_truth(coco_dir / "test_coco.json")
    rows = np.flatnonzero(gt.num_labelled > 0)
    kp = gt.keypoints[rows].copy()
    kp[..., 0] += ks_distance(0.7, gt.areas[rows], gt.spec.sigma_array)  # KS 0.7 each
    res = [{"image_id": int(gt.image_ids[r]), "category_id": 1,
            "keypoints": k.ravel().tolist(), "score": 1.0} for r, k in zip(rows, kp, strict=True)]
    path = tmp_path / "jittered.json"
    path.write_text(json.dumps(res))
    out = run("analyze", "--gt", coco_dir / "test_coco.json", "--results", path, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["keypoints"]["counts"]["jitter"] == report["keypoints"]["labelled"] > 100
    assert report["ap_if_fixed"]["alone"]["jitter"]["AP"] == pytest.approx(1.0)


def test_bad_input_exits_2_naming_the_file(coco_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"image_id": 785, "keypoints": [1.0] * 51}]))
    out = run("analyze", "--gt", coco_dir / "test_coco.json", "--results", path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"posefix analyze: error: {path}: entry 0: field 'score'")
    path.write_text("{not json")
    out = run("analyze", "--gt", coco_dir / "test_coco.json", "--results", path, "--json")
    assert out.returncode == 2 and f"{path}: not valid JSON" in out.stderr
    missing = tmp_path / "missing_gt.json"
    out = run("analyze", "--gt", missing, "--results", coco_dir / "blazepose_gtboxes.json")
    assert out.returncode == 2 and f"{missing}: file does not exist" in out.stderr
    res = json.loads((coco_dir / "movenet_multipose.json").read_text())
    res[0]["image_id"] = 5
    path.write_text(json.dumps(res))
    out = run("analyze", "--gt", coco_dir / "test_coco.json", "--results", path, "--strict")
    assert out.returncode == 2 and f"{path}: entry 0: field 'image_id'" in out.stderr


def lsp_test_split(shared_data: Path, out: Path) -> Path:
    """LSP's test split of coco17.json (face keypoints unlabelled) as its own file."""
    gt = load_ground_truth(shared_data / "lsp" / "coco17.json")
    test = [im["id"] for im in json.loads((shared_data / "lsp" / "coco17.json").read_text())[
        "images"] if im.get("split") == "test"]
    sub = gt.subset(np.flatnonzero(np.isin(gt.image_ids, test)), image_ids=test)
    out.write_text(json.dumps(sub.to_coco()))
    return out


def test_report_figures_show_the_json_numbers(shared_data: Path, tmp_path: Path) -> None:
    gt = lsp_test_split(shared_data, tmp_path / "lsp_test.json")
    results = shared_data / "lsp" / "posenet_gtboxes.json"
    out = run("analyze", "--gt", gt, "--results", results, "--json", "--report",
              tmp_path / "report")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    index = tmp_path / "report" / "index.html"
    assert set(report) == REPORT_KEYS | {"report"} and report["report"] == str(index)
    assert index.is_file() and report["num_ground_truth"] == 800
    drawn = json.loads((tmp_path / "report" / "figures.json").read_text())
    for oks, stat in (("0.50", "AP50"), ("0.75", "AP75")):
        legend = drawn[f"pr_oks{oks[2:]}"]["posenet_gtboxes"]
        assert legend["ap"] == report["pr_breakdown"][oks]  # the areas drawn, to the bit
        assert legend["legend"][0] == f"[{report['ap'][stat]:.3f}] as is"
        assert legend["ap"]["original"] == report["ap"][stat]
        assert legend["ap"]["jitter"] == report["ap_if_fixed"]["cumulative"][-1][stat]
    for name in ("pr_oks50.png", "pr_oks75.png", "error_types.png", "oks_histogram.png",
                 "size.png", "report.md", "report.json"):
        assert (tmp_path / "report" / name).stat().st_size > 1000
    # The text report says where the report is; the same numbers as --json.
    out = run("analyze", "--gt", gt, "--results", results, "--report", tmp_path / "again")
    assert out.returncode == 0, out.stderr
    assert f"report written to {tmp_path / 'again' / 'index.html'}" in out.stdout
    assert "+ no false negatives" in out.stdout
    again = json.loads((tmp_path / "again" / "figures.json").read_text())
    assert again["pr_oks75"] == drawn["pr_oks75"] and "posenet_gtboxes" in drawn["size"]


def test_report_into_a_file_exits_2(coco_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    out = run("analyze", "--gt", coco_dir / "test_coco.json", "--results",
              coco_dir / "blazepose_gtboxes.json", "--report", tmp_path / "taken")
    assert out.returncode == 2 and "not a folder" in out.stderr
    assert (tmp_path / "taken").read_text() == "x"
