"""`posefix demo` on the embedded sample, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posefix.checkpoint import save_checkpoint
from posefix.config import Config, ModelConfig
from posefix.demo import SAMPLE_ESTIMATORS, SAMPLE_PARTS, sample_dir
from posefix.io import load_ground_truth, load_results
from posefix.model import build_model
from posefix.spec import load_spec

POSEFIX = Path(sys.executable).with_name("posefix")


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
    for folder in SAMPLE_PARTS.values():
        gt = load_ground_truth(sample_dir() / folder / "annotations.json")
        assert gt.spec.name == "coco17"
        sizes[folder] = len(gt.images)
        for image_id in gt.images:
            assert gt.image_path(image_id).is_file()
        for file in SAMPLE_ESTIMATORS.values():
            dets = load_results(sample_dir() / folder / file, gt.spec, image_ids=gt.images,
                                strict=True)
            assert len(dets) > 0
    assert sizes == {".": 3, "lsp": 40}
    lsp = load_ground_truth(sample_dir() / "lsp" / "annotations.json")
    # LSP test images only (never trained on), face unlabelled
    assert min(lsp.images) >= 1001 and (lsp.keypoints[:, :5, 2] == 0).all()


def test_demo_cli_writes_results_pictures_and_report(tmp_path: Path,
                                                     small_checkpoint: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([str(POSEFIX), "demo", "--out", str(out), "--checkpoint",
                           str(small_checkpoint)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.md") in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert [(r["part"], r["estimator"]) for r in report["rows"]] == [
        (p, e) for p in SAMPLE_PARTS for e in SAMPLE_ESTIMATORS]
    for row in report["rows"]:
        folder = SAMPLE_PARTS[row["part"]]
        gt = load_ground_truth(sample_dir() / folder / "annotations.json")
        refined = load_results(row["refined"], gt.spec, image_ids=gt.images, strict=True)
        assert 0 < len(refined)
        assert 0.0 <= row["ap_after"] <= 1.0
        # The input AP is the estimator's own, measured on the sample's ground truth.
        assert row["ap_before"] > 0.1
        assert sum(row["errors_before"].values()) > 0
        pngs = sorted((out / "pictures" / row["part"] / row["estimator"]).glob("*.png"))
        assert len(pngs) == min(len(gt.images), 8)
    md = (out / "report.md").read_text()
    assert "| multi-person | blazepose |" in md and "| lsp | movenet |" in md
    assert "mean of the 4 inputs" in md


def test_demo_with_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([str(POSEFIX), "demo", "--out", str(tmp_path / "d"), "--checkpoint",
                           str(tmp_path / "nope.pt")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "nope.pt" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "d" / "report.json").exists()


@pytest.mark.slow
def test_demo_without_arguments_refines_with_the_shipped_model(tmp_path: Path) -> None:
    # What a user runs first: the shipped MobileNetV2 model, the error gate it was shipped
    # with, and the sample's four real inputs. The model never saw these images or
    # estimators; on them it raised the mean AP (0.687 -> 0.703 when shipped).
    proc = subprocess.run([str(POSEFIX), "demo", "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    rows = report["rows"]
    assert all(r["summary"]["backend"].endswith("demo_model.pt") for r in rows)
    before = sum(r["ap_before"] for r in rows) / len(rows)
    after = sum(r["ap_after"] for r in rows) / len(rows)
    assert after > before + 0.005
    assert all(r["ap_after"] >= r["ap_before"] - 0.01 for r in rows)
