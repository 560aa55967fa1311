"""`posefix synthesize`, run as the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from posefix.io import load_ground_truth, load_results
from posefix.profile import load_profile, save_profile
from posefix.taxonomy import ABSENT

POSEFIX = Path(sys.executable).parent / "posefix"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(POSEFIX), "synthesize", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_synthesize_writes_valid_reproducible_results(tmp_path: Path, coco_dir: Path) -> None:
    gt_path = coco_dir / "test_coco.json"
    gt = load_ground_truth(gt_path)
    outs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        out = tmp_path / f"{name}.json"
        r = run("--gt", gt_path, "--out", out, "--seed", seed)
        assert r.returncode == 0, r.stderr
        assert str(out) in r.stdout
        outs[name] = out
    assert outs["a"].read_bytes() == outs["b"].read_bytes()
    assert outs["a"].read_bytes() != outs["c"].read_bytes()
    dets = load_results(outs["a"], gt.spec, image_ids=gt.images, strict=True)
    keep = ~gt.iscrowd & (gt.num_labelled > 0)
    assert len(dets) == keep.sum()
    entries = json.loads(outs["a"].read_text())
    types = np.array([e["error_types"] for e in entries])
    # No trainset results: exactly the labelled keypoints are present.
    lab = gt.keypoints[keep, :, 2] > 0
    present = dets.keypoints[..., 2] > 0
    assert np.array_equal(present, (types != ABSENT))
    assert (present == lab).mean() > 0.99
    # The error-free keypoints are near their ground truth, the others not all.
    d = np.linalg.norm(dets.keypoints[..., :2] - gt.keypoints[keep, :, :2], axis=-1)
    assert np.median(d[types == 0]) < np.median(d[types == 4])


def test_synthesize_with_trainset_results_and_profile(tmp_path: Path, coco_dir: Path) -> None:
    gt_path = coco_dir / "test_coco.json"
    gt = load_ground_truth(gt_path)
    prof = tmp_path / "prof.yaml"
    save_profile(load_profile("default"), prof)
    out = tmp_path / "s.json"
    r = run("--gt", gt_path, "--out", out, "--profile", prof, "--spec", "coco17",
            "--trainset-results", coco_dir / "blazepose_gtboxes.json")
    assert r.returncode == 0, r.stderr
    dets = load_results(out, gt.spec)
    keep = ~gt.iscrowd & (gt.num_labelled > 0)
    unl = gt.keypoints[keep, :, 2] == 0
    # BlazePose found most persons: their unlabelled keypoints are filled.
    assert (dets.keypoints[unl, 2] > 0).sum() > 0


def test_synthesize_errors_are_one_line(tmp_path: Path, coco_dir: Path) -> None:
    out = tmp_path / "x.json"
    r = run("--gt", coco_dir / "test_coco.json", "--out", out, "--profile", "nope")
    assert r.returncode == 2 and "unknown error profile 'nope'" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlabelled_bins: [5]\noverlap_bins: []\n"
                   "groups: {g: {keypoints: [nose], jitter: 2}}\n")
    r = run("--gt", coco_dir / "test_coco.json", "--out", out, "--profile", bad)
    assert r.returncode == 2 and str(bad) in r.stderr and "groups.g" in r.stderr
    r = run("--gt", tmp_path / "missing.json", "--out", out)
    assert r.returncode == 2 and "does not exist" in r.stderr and not out.exists()
