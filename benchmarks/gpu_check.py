"""The GPU check of ``benchmarks/gpu_check.sh`` (read its header; settings come from the
environment it sets). Writes one JSON of figures to ``$GPU_CHECK_OUT/gpu_check.json``.

1. Data: the tiled COCO-scale file (``make_coco_scale.py val``: 6,352 persons over 5,000
   images, with ``$GPU_CHECK_DETS`` detections), or ``$GPU_CHECK_ANN`` as it is.
2. Resume: ``posefix.train.train`` of ``$GPU_CHECK_CONFIG`` for ``$GPU_CHECK_STEPS`` steps
   with AMP (``$GPU_CHECK_AMP``), SIGKILLed after step ``$GPU_CHECK_KILL`` (checkpoints
   every ``$GPU_CHECK_CKPT`` steps), resumed to the end, against the same run
   uninterrupted; deterministic kernels in both, so the weights must agree (the largest
   absolute difference is reported; the check needs it <= 1e-5 relative).
3. Speed: the same training with ``$GPU_CHECK_WORKERS`` loader workers and autotuned
   kernels; crops/s is the median ``crops_per_s`` of ``log.csv`` after the first rows.
4. Refine: ``posefix refine --backend torch`` with the trained weights on ``$GPU_CHECK_DEVICE``
   (detections/s of the whole file) and on the CPU for the first ``$GPU_CHECK_COMPARE``
   detections' images; the refined keypoints must agree within 0.05 px.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ENV = os.environ

TRAIN = """
import os, signal, sys, torch
if os.environ.get("GPU_CHECK_DETERMINISTIC") == "1":
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
else:
    torch.backends.cudnn.benchmark = True
from posefix.config import load_config
from posefix.train import train
kill_at = int(sys.argv[1])
def cb(s):
    if s.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint
train(load_config(sys.argv[2], sys.argv[3:]), resume="auto", callback=cb)
"""


def setting(name: str, default: str) -> str:
    return ENV.get(f"GPU_CHECK_{name}", default)


def run(cmd: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,),
        ) -> subprocess.CompletedProcess:
    """Run a command from the repository; fail loudly (with its tail) on an exit not in ok."""
    proc = subprocess.run(cmd, cwd=REPO, env={**ENV, **(env or {})}, capture_output=True,
                          text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd[:4])} exited {proc.returncode}:\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def data(out: Path) -> tuple[Path, Path, Path]:
    """(annotations, image root, results) for training and refinement."""
    if setting("ANN", ""):
        ann = Path(setting("ANN", ""))
        return ann, Path(setting("IMAGES", str(ann.parent))), Path(setting("RESULTS", ""))
    ann, res = out / "val2017.json", out / "val2017_dets.json"
    if not ann.is_file():
        run([sys.executable, "benchmarks/make_coco_scale.py", "val", "--out", str(ann),
             "--results", setting("DETS", "4000"), "--results-out", str(res)])
    return ann, SHARED, res


def train(out: Path, overrides: list[str], kill_at: int, deterministic: bool,
          ) -> subprocess.CompletedProcess:
    env = {"GPU_CHECK_DETERMINISTIC": "1" if deterministic else "0",
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    return run([sys.executable, "-c", TRAIN, str(kill_at), setting("CONFIG", "r50_256x192"),
                *overrides, f"run.out_dir={out}"], env, ok=(0, -signal.SIGKILL))


def weights(path: Path) -> dict:
    from posefix.checkpoint import load_checkpoint

    return load_checkpoint(path).model.state_dict()


def check_resume(out: Path, common: list[str]) -> dict:
    """Killed and resumed against uninterrupted: the largest weight difference."""
    import torch

    steps, kill = int(setting("STEPS", "300")), int(setting("KILL", "170"))
    first = train(out / "resumed", common, kill, True)
    killed = first.returncode == -signal.SIGKILL
    train(out / "resumed", common, -1, True)
    train(out / "straight", common, -1, True)
    a, b = weights(out / "resumed" / "final.pt"), weights(out / "straight" / "final.pt")
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a
               if torch.is_floating_point(a[k]))
    scale = max(float(b[k].float().abs().max()) for k in b if torch.is_floating_point(b[k]))
    return {"steps": steps, "killed_after_step": kill, "was_killed": killed,
            "resume_max_abs_weight_diff": diff,
            "resume_same_weights": killed and diff <= 1e-5 * max(scale, 1.0)}


def train_speed(out: Path, common: list[str]) -> dict:
    """Training crops/s with the loader workers asked for and autotuned kernels."""
    workers = setting("WORKERS", str(min(16, os.cpu_count() or 1)))
    start = time.perf_counter()
    train(out / "speed", [*common, f"data.workers={workers}"], -1, False)
    with open(out / "speed" / "log.csv") as f:
        rows = [float(r["crops_per_s"]) for r in csv.DictReader(f)]
    steady = rows[len(rows) // 4:] or rows
    return {"loader_workers": int(workers), "train_crops_per_s": float(np.median(steady)),
            "train_run_s": round(time.perf_counter() - start, 1)}


def refine(out: Path, ann: Path, images: Path, results: Path, ckpt: Path) -> dict:
    """Refinement on the device (whole file) and on the CPU (the first images)."""
    device = setting("DEVICE", "cuda")
    dets = json.loads(results.read_text())
    n_cmp = int(setting("COMPARE", "200"))
    keep = {d["image_id"] for d in dets[:n_cmp]}
    small = out / "compare_dets.json"
    small.write_text(json.dumps([d for d in dets if d["image_id"] in keep]))
    figures = {}
    for name, dev, res in (("device", device, results), ("device_small", device, small),
                           ("cpu_small", "cpu", small)):
        proc = run([sys.executable, "-m", "posefix", "refine", "--checkpoint", str(ckpt), "--images", str(images),
                    "--gt", str(ann), "--results", str(res), "--out", str(out / f"{name}.json"),
                    "--backend", "torch", "--device", dev, "--workers",
                    setting("WORKERS", "4"), "--json"])
        figures[name] = json.loads(proc.stdout)
    a = np.array([d["keypoints"] for d in json.loads((out / "device_small.json").read_text())])
    b = np.array([d["keypoints"] for d in json.loads((out / "cpu_small.json").read_text())])
    same_rows = a.shape == b.shape
    diff = float(np.abs(a - b).reshape(len(a), -1, 3)[..., :2].max()) if same_rows and len(a) \
        else float("inf")
    return {"refine_device": device, "refine_detections": figures["device"]["detections_in"],
            "refine_det_per_s": figures["device"]["detections_per_second"],
            "refine_cpu_det_per_s_small": figures["cpu_small"]["detections_per_second"],
            "refine_compared_detections": int(len(a)),
            "refine_max_abs_keypoint_diff_px": diff, "refine_within_0.05px": diff <= 0.05}


def main() -> None:
    start = time.perf_counter()
    out = Path(setting("OUT", str(REPO / "runs" / "gpu_check")))
    out.mkdir(parents=True, exist_ok=True)
    ann, images, results = data(out)
    train_set = f"[{{ann: {ann}, images: {images}}}]"
    amp = setting("AMP", "float16")
    common = [f"data.train={train_set}", "data.val=[]", "run.progress=false",
              "run.val_every=0", f"optim.max_steps={setting('STEPS', '300')}",
              f"optim.batch_size={setting('BATCH', '32')}", "run.log_every=10",
              f"run.checkpoint_every={setting('CKPT', '100')}",
              f"run.device={setting('DEVICE', 'cuda')}",
              f"data.workers={setting('RESUME_WORKERS', '8')}",
              *(["optim.amp=true", f"optim.amp_dtype={amp}"] if amp != "none" else []),
              *setting("OVERRIDES", "").split()]
    import torch

    report = {"config": setting("CONFIG", "r50_256x192"), "device": setting("DEVICE", "cuda"),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "amp": amp, "batch_size": int(setting("BATCH", "32")), "annotations": str(ann)}
    report.update(check_resume(out, common))
    report.update(train_speed(out, common))
    report.update(refine(out, ann, images, results, out / "straight" / "final.pt"))
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["passed"] = bool(report["resume_same_weights"] and report["refine_within_0.05px"])
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
