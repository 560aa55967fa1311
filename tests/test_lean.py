"""A lean install (``pip install posefix``: no PyTorch) refines, evaluates, analyzes,
visualizes, synthesizes and runs the demo; each verb or option that needs PyTorch says so
in one line and exits 2. Run in processes where importing torch (or torchvision) fails,
and, for the lean verbs, also in one where it would succeed: they must not import it.

No torch at import here: this file runs in CI's lean virtual environment too."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import posefix

SAMPLE = Path(posefix.__file__).resolve().parent / "assets" / "sample"
INSTALL = "pip install 'posefix[torch]'"

#: Runs ``posefix.cli.main`` once per JSON argument list given, printing each exit status
#: and at the end whether torch was imported; argv[1] "block" makes importing torch and
#: torchvision fail as where they are not installed.
_RUNNER = """
import json, sys
if sys.argv[1] == "block":
    sys.modules["torch"] = sys.modules["torchvision"] = None  # import: ModuleNotFoundError
from posefix.cli import main
for args in sys.argv[2:]:
    print("rc", main(json.loads(args)), flush=True)
print("torch imported:", sys.modules.get("torch") is not None)
"""


def _posefix(block: bool, *commands: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``posefix`` commands run one after another in a fresh process."""
    env = {**os.environ, "POSEFIX_CACHE": str(cwd / "cache")}  # no export may hide in it
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, "block" if block else "allow",
         *(json.dumps(c) for c in commands)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _clip(folder: Path) -> tuple[Path, Path]:
    """A 3-frame clip of a sample image and MoveNet's poses on each frame."""
    image = cv2.imread(str(SAMPLE / "000000196141.jpg"))[:424, :632]
    people = [d for d in json.loads((SAMPLE / "movenet.json").read_text())
              if d["image_id"] == 196141]
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                             (image.shape[1], image.shape[0]))
    for _ in range(3):
        writer.write(image)
    writer.release()
    results = [{**d, "image_id": f} for f in range(3) for d in people]
    (folder / "frames.json").write_text(json.dumps(results))
    return folder / "clip.mp4", folder / "frames.json"


def _lean_verbs(folder: Path) -> list[list[str]]:
    """Every verb of a lean install on the sample, writing into ``folder``."""
    gt, movenet = str(SAMPLE / "annotations.json"), str(SAMPLE / "movenet.json")
    video, frames = _clip(folder)
    return [
        ["refine", "--images", str(SAMPLE), "--results", movenet, "--gt", gt,
         "--out", "refined.json", "--report", "report"],
        ["refine", "--images", str(SAMPLE), "--results", movenet, "--gt", gt,
         "--out", "refined_f32.json", "--backend", "onnxruntime"],
        ["refine", "--images", str(SAMPLE), "--results", movenet, "--gt", gt,  # decoding only
         "--out", "refined_gate.json", "--error-gate", "0.3", "--error-blend", "0.1"],
        ["refine", "--video", str(video), "--results", str(frames), "--out", "video.json"],
        ["evaluate", "--gt", gt, "--results", "refined.json"],
        ["analyze", "--gt", gt, "--results", movenet, "--report", "analysis",
         "--fit-profile", "profile.yaml"],
        ["visualize", "--images", str(SAMPLE), "--gt", gt, "--results", f"input={movenet}",
         "--results", "refined=refined.json", "--out", "pictures"],
        ["visualize", "--video", str(video), "--results", f"refined={folder / 'video.json'}",
         "--out", "side.avi"],
        ["synthesize", "--gt", gt, "--out", "synthetic.json", "--profile", "profile.yaml"],
        ["demo", "--out", "demo"],
    ]


@pytest.mark.slow
@pytest.mark.parametrize("block", [True, False], ids=["torch-fails", "torch-untouched"])
def test_the_lean_verbs_run_without_torch(tmp_path: Path, block: bool) -> None:
    if not block and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: the other run is this one")
    commands = _lean_verbs(tmp_path)
    r = _posefix(block, *commands, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("rc ")] == ["rc 0"] * len(commands), \
        r.stdout[-3000:] + r.stderr[-3000:]
    assert lines[-1] == "torch imported: False"
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "cache").exists()  # the shipped model's exports: nothing exported
    refined = json.loads((tmp_path / "refined.json").read_text())
    movenet = json.loads((SAMPLE / "movenet.json").read_text())
    assert len(refined) == len(movenet)
    moved = [np.abs(np.subtract(a["keypoints"], b["keypoints"])).max()
             for a, b in zip(refined, movenet, strict=True)]
    assert max(moved) > 1  # refined, not copied
    for made in ("report/report.md", "analysis/report.md", "profile.yaml", "side.avi",
                 "synthetic.json", "demo/report.md", "video.json", "refined_f32.json",
                 "refined_gate.json"):
        assert (tmp_path / made).is_file(), made
    assert len(list((tmp_path / "pictures").iterdir())) == 3
    # another gate is decoded from the same shipped export, and changes the keypoints
    assert (tmp_path / "refined_gate.json").read_bytes() != (tmp_path / "refined.json").read_bytes()


def _refusals(folder: Path) -> list[tuple[list[str], str]]:
    """Commands that need torch, and what their one line names."""
    gt, movenet = str(SAMPLE / "annotations.json"), str(SAMPLE / "movenet.json")
    refine = ["refine", "--images", str(SAMPLE), "--results", movenet, "--gt", gt,
              "--out", "refined.json"]
    other = folder / "other.pt"  # not the shipped model: it would be exported
    shutil.copyfile(SAMPLE.parent / "demo_model.pt", other)
    with open(other, "ab") as f:
        f.write(b"\0")
    return [
        (["train", "tiny_cpu", "optim.max_steps=1"], "posefix train: error: needs PyTorch"),
        (["export", "--onnx", "model.onnx"], "posefix export: error: needs PyTorch"),
        (["export", "--onnx", "model.onnx", "--int8"], "posefix export: error: needs PyTorch"),
        ([*refine, "--backend", "torch"], "posefix refine: error: the PyTorch backend "
                                          "(--backend torch) needs PyTorch"),
        ([*refine, "--device", "cuda"], "posefix refine: error: --device cuda"),
        ([*refine, "--checkpoint", str(other)], "posefix refine: error: exporting other.pt"),
        (["demo", "--checkpoint", str(other)], "posefix demo: error: exporting other.pt"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_what_needs_torch_says_so_in_one_line(tmp_path: Path, case: int) -> None:
    command, says = _refusals(tmp_path)[case]
    r = _posefix(True, command, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]  # the runner itself
    assert r.stdout.splitlines()[0] == "rc 2", r.stdout + r.stderr[-3000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(says) and err[0].endswith(INSTALL), r.stderr
    assert not (tmp_path / "refined.json").exists() and not (tmp_path / "model.onnx").exists()


def test_the_library_refuses_the_torch_backend_without_torch(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "from posefix.backends import TorchMissingError\n"
            "from posefix.refiner import load_refiner\n"
            "try:\n    load_refiner(None, 'torch')\n"
            "except TorchMissingError as e:\n    print('refused:', e)\n"
            "print(load_refiner(None).description)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    refused, runs = r.stdout.splitlines()
    assert refused.startswith("refused: the PyTorch backend") and refused.endswith(INSTALL)
    assert runs.startswith("onnxruntime")  # the default backend needs no torch
