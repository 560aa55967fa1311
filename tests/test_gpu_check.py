"""benchmarks/gpu_check.sh, the check meant for a GPU machine, runs here at tiny sizes on
the CPU (``GPU_CHECK_TINY=1``): every step of it (tiled data or given files, a training run
SIGKILLed and resumed against an uninterrupted one, training speed, refinement on the
device against the CPU, the JSON of figures) is exercised, so the script itself is tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_runs_at_tiny_sizes_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_TINY": "1", "GPU_CHECK_OUT": str(tmp_path),
           "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["config"] == "tiny_cpu"
    assert report["was_killed"] and report["resume_same_weights"], report
    assert report["resume_max_abs_weight_diff"] <= 1e-5
    assert report["train_crops_per_s"] > 0 and report["loader_workers"] == 1
    assert report["refine_compared_detections"] > 0 and report["refine_within_0.05px"]
    assert report["refine_det_per_s"] > 0 and report["passed"]
