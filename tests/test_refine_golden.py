"""The refined results of the shared estimators' files, pinned: any change to the refinement
pipeline (crops, batching, flip test, uncropping, OKS-NMS, rescoring) that changes an output
number shows here. The network is a seeded, untrained-but-randomized MobileNetV2 with an
error head and gate, so every stage of the pipeline moves keypoints.

Regenerate (only for an intended change of the outputs) with
``POSEFIX_REGEN_GOLDEN=1 python -m pytest tests/test_refine_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from posefix.checkpoint import save_checkpoint
from posefix.commands.refine import refine_files
from posefix.config import Config, ModelConfig
from posefix.model import build_model
from posefix.options import RefineFileOptions, RefineOptions
from posefix.spec import load_spec

GOLDEN = Path(__file__).parent / "data" / "refine_golden"
CASES = [  # (folder, results file, score, batch size)
    ("coco", "blazepose_gtboxes.json", "input", 32),
    ("coco", "blazepose_detboxes.json", "heatmap", 3),
    ("coco", "movenet_multipose.json", "input", 5),
    ("ochuman", "movenet_multipose.json", "heatmap", 32),
]
GT = {"coco": "test_coco.json", "ochuman": "test_ochuman.json"}


@pytest.fixture(scope="module")
def seeded_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="mobilenet_v2", input_size=(64, 48),
                                   deconv_channels=16, pose_skip=1.0, error_head=True,
                                   error_gate=0.5))
    spec = load_spec("coco17")
    net = build_model(cfg.model, spec.num_keypoints)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.deconv.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.05)
        net.final.weight.copy_(torch.randn(net.final.weight.shape, generator=gen) * 0.3)
        net.error_head.out.weight.copy_(torch.randn(net.error_head.out.weight.shape,
                                                    generator=gen))
    return save_checkpoint(tmp_path_factory.mktemp("golden") / "seeded.pt", model=net.eval(),
                           config=cfg, spec=spec)


@pytest.mark.parametrize(("folder", "name", "score", "batch"), CASES)
def test_refined_results_are_pinned(data_dir: Path, seeded_checkpoint: Path,
                                    tmp_path: Path, folder: str, name: str, score: str,
                                    batch: int) -> None:
    out = tmp_path / "refined.json"
    options = RefineFileOptions(RefineOptions(score=score, batch_size=batch, workers=0,
                                              device="cpu"), progress=False,
                                backend="torch")
    refine_files(seeded_checkpoint, data_dir / folder, data_dir / folder / name, out,
                 gt=data_dir / folder / GT[folder], options=options)
    got = json.loads(out.read_text())
    golden = GOLDEN / f"{folder}_{name}"
    if os.environ.get("POSEFIX_REGEN_GOLDEN"):
        golden.write_text(json.dumps(got))
    want = json.loads(golden.read_text())
    assert [(d["image_id"], d["category_id"]) for d in got] == \
        [(d["image_id"], d["category_id"]) for d in want]
    kp_got = np.array([d["keypoints"] for d in got])
    kp_want = np.array([d["keypoints"] for d in want])
    np.testing.assert_allclose(kp_got, kp_want, atol=2e-3)  # pixels and confidences
    np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in want],
                               atol=1e-5)
    # the pinned outputs are not the inputs: the network moved keypoints (a share of them:
    # the gate keeps the others where the estimator put them)
    inputs = json.loads((data_dir / folder / name).read_text())
    assert 0.25 < _moved_share(want, inputs) < 0.95


def _moved_share(results: list[dict], inputs: list[dict]) -> float:
    """The share of ``results``' keypoints found at no input keypoint of the same image."""
    placed: dict[int, set] = {}
    for d in inputs:
        xy = np.round(np.reshape(d["keypoints"], (-1, 3))[:, :2], 2)
        placed.setdefault(d["image_id"], set()).update(map(tuple, xy))
    moved = [tuple(p) not in placed[d["image_id"]]
             for d in results for p in np.round(np.reshape(d["keypoints"], (-1, 3))[:, :2], 2)]
    return float(np.mean(moved))


def test_moved_share_tells_moved_from_kept_keypoints() -> None:
    inputs = [{"image_id": 1, "keypoints": [10.0, 20.0, 1.0, 30.0, 40.0, 1.0]}]
    assert _moved_share(inputs, inputs) == 0.0
    moved = [{"image_id": 1, "keypoints": [10.5, 20.0, 1.0, 30.0, 40.0, 0.3]}]
    assert _moved_share(moved, inputs) == 0.5


def test_the_default_backend_agrees_with_the_pinned_torch_outputs(
        data_dir: Path, seeded_checkpoint: Path, tmp_path: Path) -> None:
    """The default (``auto``: ONNX Runtime on a CPU, an export cached per checkpoint) gives
    the torch path's outputs within a small tolerance, and uses the cache a second time."""
    folder, name, score, batch = CASES[1]
    outs = []
    for run in range(2):
        out = tmp_path / f"default{run}.json"
        options = RefineFileOptions(RefineOptions(score=score, batch_size=batch, workers=0,
                                                  device="cpu"), progress=False)
        summary = refine_files(seeded_checkpoint, data_dir / folder, data_dir / folder / name,
                               out, gt=data_dir / folder / GT[folder], options=options)
        assert summary["backend"].startswith("onnxruntime")
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1]
    want = json.loads((GOLDEN / f"{folder}_{name}").read_text())
    assert [d["image_id"] for d in outs[0]] == [d["image_id"] for d in want]
    np.testing.assert_allclose([d["keypoints"] for d in outs[0]],
                               [d["keypoints"] for d in want], atol=2e-3)
    np.testing.assert_allclose([d["score"] for d in outs[0]], [d["score"] for d in want],
                               atol=1e-4)
