"""`posefix demo` on the embedded sample, run as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posefix.checkpoint import save_checkpoint
from posefix.commands.demo import (
    SAMPLE_ESTIMATORS,
    SAMPLE_INPUTS,
    SAMPLE_PARTS,
    refine_every_row,
    sample_dir,
)
from posefix.comparison import (
    attribute_change,
    compare_results,
    extreme_images,
    image_oks_change,
    moved_keypoints,
)
from posefix.config import Config, ModelConfig
from posefix.diagnosis import classify_keypoints
from posefix.evaluate import evaluate
from posefix.io import Detections, GroundTruth, load_ground_truth, load_results
from posefix.model import build_model
from posefix.options import RefineOptions
from posefix.spec import load_spec

POSEFIX = Path(sys.executable).with_name("posefix")
README = Path(__file__).resolve().parents[1] / "README.md"
RESULTS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"
#: How the README's results table names each of the demo's inputs.
README_ROWS = {("multi-person", "blazepose"): "BlazePose, 3 multi-person images",
               ("multi-person", "movenet"): "MoveNet MultiPose, 3 multi-person images",
               ("lsp", "blazepose"): "BlazePose, 40 LSP test images",
               ("lsp", "movenet"): "MoveNet MultiPose, 40 LSP test images",
               ("lsp", "posenet"): "PoseNet single-pose, 40 LSP test images"}


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet-18 refiner at 64x48 (the pipeline, not the model, is tested)."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", input_size=(64, 48),
                                   deconv_channels=32, pose_skip=1.0))
    spec = load_spec("coco17")
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    return save_checkpoint(path, model=build_model(cfg.model, spec.num_keypoints), config=cfg,
                           spec=spec)


def test_sample_is_complete_and_valid() -> None:
    sizes = {}
    for part, estimator in SAMPLE_INPUTS:
        folder = SAMPLE_PARTS[part]
        gt = load_ground_truth(sample_dir() / folder / "annotations.json")
        assert gt.spec.name == "coco17"
        sizes[folder] = len(gt.images)
        for image_id in gt.images:
            assert gt.image_path(image_id).is_file()
        dets = load_results(sample_dir() / folder / SAMPLE_ESTIMATORS[estimator], gt.spec,
                            image_ids=gt.images, strict=True)
        assert len(dets) > 0
    assert sizes == {".": 3, "lsp": 40}
    lsp = load_ground_truth(sample_dir() / "lsp" / "annotations.json")
    # LSP test images only (never trained on), face unlabelled
    assert min(lsp.images) >= 1001 and (lsp.keypoints[:, :5, 2] == 0).all()
    posenet = load_results(sample_dir() / "lsp" / "posenet.json", lsp.spec)
    assert sorted(np.unique(posenet.image_ids)) == sorted(lsp.images)  # one pose per image


def _sample(part: str, estimator: str) -> tuple[GroundTruth, Detections]:
    folder = sample_dir() / SAMPLE_PARTS[part]
    gt = load_ground_truth(folder / "annotations.json")
    return gt, load_results(folder / SAMPLE_ESTIMATORS[estimator], gt.spec)


def _with(d: Detections, keypoints: np.ndarray | None = None,
          scores: np.ndarray | None = None) -> Detections:
    return Detections(image_ids=d.image_ids, category_ids=d.category_ids, boxes=d.boxes,
                      keypoints=d.keypoints if keypoints is None else keypoints,
                      scores=d.scores if scores is None else scores)


def test_attribution_of_a_removed_detection_is_all_nms() -> None:
    # The multi-person BlazePose input has a duplicate: removing it changes AP, and no
    # keypoint moved, so the whole change is OKS-NMS's (the "swap 7 -> 0" case).
    gt, dets = _sample("multi-person", "blazepose")
    d = classify_keypoints(gt, dets)
    drop, person = int(d.det_index[-1]), int(d.gt_index[-1])
    kept = np.setdiff1d(np.arange(len(dets)), [drop])
    out = attribute_change(gt, dets, dets, kept)
    total = evaluate(gt, dets.select(kept))["AP"] - evaluate(gt, dets)["AP"]
    assert out["parts"]["keypoints"] == 0 and out["parts"]["scores"] == 0
    assert out["parts"]["nms"] == pytest.approx(total) and total != 0
    assert out["keypoints_moved"] == 0 and out["removed_matched"] == 1
    assert list(out["removed_by_nms"]) == [drop]
    assert {c for p in out["persons"] for c in p["causes"]} == {"nms"}
    assert person in {p["person"] for p in out["persons"]}


def test_attribution_parts_add_up_and_name_moved_keypoints() -> None:
    gt, dets = _sample("lsp", "posenet")
    kps = dets.keypoints.copy()
    # Put the right knee of the first three persons on the ground truth: moved keypoints.
    rows = np.arange(3)
    knee = gt.spec.keypoints.index("right_knee")
    g = [int(gt.indices_of_image(int(i))[0]) for i in dets.image_ids[rows]]
    kps[rows, knee, :2] = gt.keypoints[g, knee, :2]
    scores = dets.scores[::-1].copy()  # and new person scores
    refined = _with(dets, kps, scores)
    kept = np.arange(len(dets))[1:]  # and the first detection removed
    out = attribute_change(gt, dets, refined, kept)
    ap = out["ap"]
    assert ap["input"] == pytest.approx(evaluate(gt, dets)["AP"])
    assert ap["keypoints"] == pytest.approx(evaluate(gt, _with(dets, kps))["AP"])
    assert ap["scores"] == pytest.approx(evaluate(gt, refined)["AP"])
    assert ap["nms"] == pytest.approx(evaluate(gt, refined.select(kept))["AP"])
    assert sum(out["parts"].values()) == pytest.approx(ap["nms"] - ap["input"])
    assert out["ap_scores_only"] == pytest.approx(evaluate(gt, _with(dets, None, scores))["AP"])
    moved = np.asarray(out["moved"])
    assert moved.sum() == out["keypoints_moved"] == int(
        (np.linalg.norm(kps - dets.keypoints, axis=-1) > 0.05).sum())
    assert set(np.flatnonzero(moved.any(1))) <= set(rows)
    by_person = {p["person"]: p for p in out["persons"]}
    assert by_person[g[0]]["causes"] == ["nms"]  # its detection removed
    assert by_person[g[0]]["matched"][-1] is False
    for p in g[1:]:
        if p in by_person:
            assert by_person[p]["causes"] == ["keypoints"] and by_person[p]["change"] > 0


def test_attribution_and_comparison_take_the_callers_measurements_unchanged() -> None:
    # The demo measures the input and the output once and hands both on: the numbers are
    # the ones measured here (input and output not mixed up, nothing measured on another set).
    gt, dets = _sample("lsp", "posenet")
    kps = dets.keypoints.copy()
    kps[:20, :, :2] += 4.0
    refined = _with(dets, kps, dets.scores[::-1].copy())
    kept = np.arange(len(dets))[2:]
    final = refined.select(kept)
    diagnoses = (classify_keypoints(gt, dets), classify_keypoints(gt, final))
    evaluations = (evaluate(gt, dets), evaluate(gt, final))
    got = attribute_change(gt, dets, refined, kept, diagnoses=diagnoses,
                           evaluations=evaluations)
    want = attribute_change(gt, dets, refined, kept)
    assert got["ap"] == want["ap"] and got["persons"] == want["persons"]
    assert got["image_change"] == want["image_change"] and len(want["persons"]) > 2
    assert got["removed_matched"] == want["removed_matched"] == 2
    assert compare_results(gt, dets, final, diagnoses, evaluations) == \
        compare_results(gt, dets, final)


def test_extreme_images_are_the_largest_rises_and_falls_past_the_threshold() -> None:
    # What the demo's pictures and the refine report's examples show: at most `num` each
    # way, the largest first, equal changes by image id, changes under 5e-4 never.
    change = {7: 0.2, 3: 0.2, 5: 0.01, 9: 4e-4, 2: -4e-4, 4: -0.3, 8: -0.3, 6: -0.1, 1: 0.05}
    assert extreme_images(change, 3) == ([3, 7, 1], [8, 4, 6])
    assert extreme_images(change, 9) == ([3, 7, 1, 5], [8, 4, 6])
    assert extreme_images({1: 4e-4, 2: 0.0}, 3) == ([], [])
    assert extreme_images(change, 2, eps=0.25) == ([], [8, 4])


def test_moved_keypoints_ignores_rounding_and_counts_added() -> None:
    _, dets = _sample("lsp", "movenet")
    kps = dets.keypoints.copy()
    kps[:, :, :2] += 1e-9  # the inverse affine map's rounding: no move
    kps[0, 5, :2] += 3.0
    before = dets.keypoints.copy()
    before[1, 6] = 0  # absent in the input, placed by refinement: added
    moved, added = moved_keypoints(_with(dets, before), _with(dets, kps))
    assert moved.sum() == 1 and moved[0, 5]
    assert added.sum() == 1 and added[1, 6]


def test_every_row_refined_is_posefix_refine_before_nms(small_checkpoint: Path) -> None:
    # The demo refines once, keeping every row and the OKS-NMS verdict; less the suppressed
    # rows that is what `posefix refine` writes (the multi-person BlazePose input has a
    # duplicate that OKS-NMS removes).
    from posefix.images import load_image
    from posefix.refine import refine_detections
    from posefix.refiner import Refiner

    gt, dets = _sample("multi-person", "blazepose")
    refiner = Refiner.from_checkpoint(small_checkpoint, backend="torch")
    paths = {i: gt.image_path(i) for i in gt.images}
    sizes = {i: (gt.images[i].width, gt.images[i].height) for i in gt.images}
    images = {i: load_image(p, "auto", sizes[i]) for i, p in paths.items()}
    every, kept = refine_every_row(refiner, dets, images)
    want, counts = refine_detections(dets, paths, refiner, RefineOptions(workers=0),
                                     image_sizes=sizes)
    assert len(kept) == len(want) == len(dets) - counts.suppressed_nms < len(dets)
    got = every.select(kept)
    assert (got.image_ids == want.image_ids).all()
    np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    assert not np.allclose(every.keypoints, dets.keypoints)  # refined, every row


def test_demo_cli_writes_results_pictures_and_report(tmp_path: Path,
                                                     small_checkpoint: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([str(POSEFIX), "demo", "--out", str(out), "--checkpoint",
                           str(small_checkpoint)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.md") in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert [(r["part"], r["estimator"]) for r in report["rows"]] == list(SAMPLE_INPUTS)
    md = (out / "report.md").read_text()
    for row in report["rows"]:
        folder = SAMPLE_PARTS[row["part"]]
        gt = load_ground_truth(sample_dir() / folder / "annotations.json")
        refined = load_results(row["refined"], gt.spec, image_ids=gt.images, strict=True)
        assert len(refined) == row["detections_out"] == row["detections_in"] - row[
            "removed_by_nms"]
        assert row["ap_after"] == pytest.approx(evaluate(gt, refined)["AP"])
        # The input AP is the estimator's own, measured on the sample's ground truth.
        assert row["ap_before"] > 0.1
        # The steps add up to the change.
        assert row["ap_before"] + sum(row["ap_parts"].values()) == pytest.approx(
            row["ap_after"])
        # Matched persons before and after, and keypoint totals that add up.
        ch = row["error_changes"]
        m = np.asarray(ch["transitions"])
        assert m.sum(1).sum() == m.sum(0).sum() > 0
        assert (f"| {row['matched_before']} -> {row['matched_after']} of {row['persons']} |"
                in md)
        # Pictures: the images whose OKS changed most, gains and losses, marked.
        pngs = sorted((out / "pictures" / row["part"] / row["estimator"]).glob("*.png"))
        assert sorted(Path(p["png"]) for p in row["pictures"]) == pngs
        gains = [p["oks_change"] for p in row["pictures"] if p["kind"] == "gain"]
        losses = [p["oks_change"] for p in row["pictures"] if p["kind"] == "loss"]
        assert all(g > 0 for g in gains) and all(v < 0 for v in losses)
        assert gains == sorted(gains, reverse=True) and losses == sorted(losses)
        # ranked as the refine report ranks its examples: one picker for both
        dets = load_results(row["input"], gt.spec, image_ids=gt.images, strict=True)
        change = image_oks_change(gt, (classify_keypoints(gt, dets),
                                       classify_keypoints(gt, refined)))
        rose, fell = extreme_images(change, 3)
        assert [p["image_id"] for p in row["pictures"]] == rose + fell
        assert [p["oks_change"] for p in row["pictures"]] == pytest.approx(
            [change[i] for i in rose + fell], abs=1e-6)  # the refined file rounds
        changed = [p for p in row["persons_changed"] if abs(p["change"]) >= 5e-4]
        if changed:
            assert row["pictures"]
        for png in pngs:  # small LSP images enlarged: each panel's longer side >= 480 px
            width, height = Image.open(png).size
            assert max(height, (width - 12) / 3) >= 480
    assert "| multi-person | blazepose |" in md and "| lsp | posenet |" in md
    assert "mean of the 5 inputs" in md


def test_demo_with_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([str(POSEFIX), "demo", "--out", str(tmp_path / "d"), "--checkpoint",
                           str(tmp_path / "nope.pt")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "nope.pt" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "d" / "report.json").exists()


_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def _said_within(said: str, text: str) -> bool:
    """Whether ``text`` says ``said`` with each of its numbers within rounding noise: 0.003
    for decimals (AP, OKS), 2 for counts. Another OpenCV or Pillow than
    recipes/demo/requirements.txt pins moves the crops' pixels, and the last digit with them
    (opencv-python-headless 5.1.0.95: PoseNet 0.491 -> 0.492, 26 -> 27 keypoints moved)."""
    parts = _NUMBER.split(said)
    pattern = r"([+-]?\d+(?:\.\d+)?)".join(re.escape(p) for p in parts)
    want = _NUMBER.findall(said)
    for found in re.finditer(pattern, text):
        if all(abs(float(a) - float(b)) <= (0.003 if "." in a else 2)
               for a, b in zip(want, found.groups(), strict=True)):
            return True
    return False


@pytest.mark.slow
def test_demo_without_arguments_refines_with_the_shipped_model(tmp_path: Path) -> None:
    # What a user runs first: the shipped MobileNetV2 model, the error gate it was shipped
    # with, and the sample's five real inputs. The model never saw these images or
    # estimators; on them it raises the mean AP, most on the weak PoseNet.
    proc = subprocess.run([str(POSEFIX), "demo", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert report["model"].endswith("demo_model.pt")
    rows = {(r["part"], r["estimator"]): r for r in report["rows"]}
    before = sum(r["ap_before"] for r in rows.values()) / len(rows)
    after = sum(r["ap_after"] for r in rows.values()) / len(rows)
    assert after > before + 0.005
    assert all(r["ap_after"] >= r["ap_before"] - 0.01 for r in rows.values())
    posenet = rows["lsp", "posenet"]
    assert posenet["keypoints_moved"] > 10 and posenet["ap_parts"]["keypoints"] > 0
    # The README's results table and the docs' demo paragraph are this run's numbers
    # (update them when the model changes).
    assert set(README_ROWS) == set(rows)
    table = [f"| demo: {README_ROWS[key]} | {r['persons']} | {r['ap_before']:.3f} | "
             f"{r['ap_after']:.3f} | {r['ap_parts']['keypoints']:+.3f} | "
             f"{r['ap_parts']['scores']:+.3f} | {r['ap_parts']['nms']:+.3f} |"
             for key, r in rows.items()]
    table.append(f"| demo: mean of the {len(rows)} inputs | | {before:.3f} | {after:.3f} |")
    readme = " ".join(README.read_text().split())
    assert [s for s in table if not _said_within(s, readme)] == [], \
        "update the README's results table"
    blaze = rows["multi-person", "blazepose"]
    said = [f"the mean AP of the {len(rows)} inputs goes {before:.3f} -> {after:.3f}",
            f"PoseNet's on LSP {posenet['ap_before']:.3f} -> {posenet['ap_after']:.3f} (moved "
            f"keypoints {posenet['ap_parts']['keypoints']:+.3f}, new scores "
            f"{posenet['ap_parts']['scores']:+.3f})",
            f"BlazePose input's {blaze['ap_before']:.3f} -> {blaze['ap_after']:.3f}",
            f"(OKS-NMS {blaze['ap_parts']['nms']:+.3f}, new scores "
            f"{blaze['ap_parts']['scores']:+.3f}, moved keypoints "
            f"{blaze['ap_parts']['keypoints']:+.3f})",
            f"({rows['lsp', 'movenet']['keypoints_moved']} and "
            f"{rows['lsp', 'blazepose']['keypoints_moved']} keypoints)"]
    best = posenet["pictures"][0]  # the docs' picture: the largest gain, its person
    person = next(p for p in posenet["persons_changed"] if p["image_id"] == best["image_id"])
    said += [f"`pictures/lsp/posenet/{Path(best['png']).name}`",
             f"OKS goes {person['oks'][0]:.3f} -> {person['oks'][-1]:.3f}, all from moved "
             "keypoints" if person["causes"] == ["keypoints"] else "(causes differ)"]
    text = " ".join(RESULTS_PAGE.read_text().split())
    assert [s for s in said if not _said_within(s, text)] == [], \
        "update the demo paragraph of docs/results.md"
    assert blaze["removed_by_nms"] >= 1  # "removing a duplicate detection"


def test_said_within_tolerates_the_last_digit_only() -> None:
    text = "PoseNet's on LSP 0.411 -> 0.491 (moved keypoints +0.014) with 26 and 1 keypoints"
    assert _said_within("LSP 0.411 -> 0.492 (moved keypoints +0.015)", text)
    assert _said_within("with 27 and 1 keypoints", text)
    assert not _said_within("LSP 0.411 -> 0.501 (moved keypoints +0.014)", text)
    assert not _said_within("with 29 and 1 keypoints", text)
    assert not _said_within("MoveNet's on LSP 0.411 -> 0.491", text)


def test_demo_pictures_follow_the_refine_reports_ranking(tmp_path: Path, small_checkpoint: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # One picker for the demo and `refine --report`: the demo draws the images that
    # posefix.comparison.image_oks_change ranks first, with its numbers.
    import posefix.comparison
    from posefix.commands.demo import run_demo

    def fake(truth: GroundTruth, diagnoses: tuple) -> dict[int, float]:
        return {min(truth.images): 0.5, max(truth.images): -0.25}

    monkeypatch.setattr(posefix.comparison, "image_oks_change", fake)
    report = run_demo(tmp_path / "demo", small_checkpoint)
    for row in report["rows"]:
        gt = load_ground_truth(sample_dir() / SAMPLE_PARTS[row["part"]] / "annotations.json")
        assert [(p["kind"], p["image_id"], p["oks_change"]) for p in row["pictures"]] == [
            ("gain", min(gt.images), 0.5), ("loss", max(gt.images), -0.25)]
