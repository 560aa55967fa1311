"""int8 quantization of the exported refiner (:mod:`posefix.quantize`): speed per crop with
one thread, end to end, and accuracy on LSP test against the float32 export.

    OMP_NUM_THREADS=1 python benchmarks/bench_int8.py                       # speed per crop
    OMP_NUM_THREADS=1 python benchmarks/bench_int8.py --end-to-end --accuracy

Speed: the network alone on the same inputs in memory (the shipped calibration set's 64
crops and their mirrored copies, batches of 64, repeated), one thread each, the paths
alternated and the best of ``--repeat`` kept: PyTorch float32 (``PoseFixNet.predict``, as
``bench_refine.py`` times it), ONNX Runtime float32 (the export) and ONNX Runtime int8
(that export quantized with the shipped calibration set). Crops per second of wall-clock
and of CPU time (``time.process_time``).

``--end-to-end``: ``refine_files`` with the int8 file and with the float32 export, file in ->
file out, against the PyTorch float32 network alone on the same batches (the functions of
``bench_refine.py``: its 160 COCO BlazePose detections, flip test, batch 32, 2 loader
workers), interleaved.

``--accuracy``: ``posefix refine --onnx FILE`` (float32 and int8) on LSP test with each
real estimator's output (../shared/data/lsp), AP after refinement and the differences of
the refined keypoints and scores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_refine import DATA, cpu_seconds, forward_only, make_inputs  # noqa: E402

from posefix.checkpoint import default_checkpoint_path, load_checkpoint  # noqa: E402
from posefix.commands.refine import refine_files  # noqa: E402
from posefix.export import export_onnx  # noqa: E402
from posefix.options import RefineFileOptions, RefineOptions  # noqa: E402
from posefix.quantize import calibration_batches, load_calibration, quantize_onnx  # noqa: E402
from posefix.spec import load_spec  # noqa: E402

LSP = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsp"
INPUTS = ("blazepose_gtboxes", "movenet_multipose", "posenet_gtboxes", "posenet_multi")


def per_crop(ckpt: Path, files: dict[str, Path], repeat: int, copies: int) -> dict:
    """Crops/s (wall and CPU) of torch float32 and each ONNX file, alternated."""
    cal = load_calibration()
    ((x0, p0), (x1, p1)) = calibration_batches(cal.crops, cal.poses,
                                               load_spec(cal.spec).flip_index, 32)
    batches = [(x0, p0), (x1, p1)] * copies
    net = load_checkpoint(ckpt).model.float().eval()
    sessions = {}
    for name, f in files.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])

    def torch_run() -> None:
        with torch.inference_mode():
            for x, p in batches:
                net.predict(torch.from_numpy(x), torch.from_numpy(p))

    def ort_run(s: ort.InferenceSession) -> None:
        for x, p in batches:
            s.run(None, {"images": x, "input_pose": p})

    runs = {"torch float32": torch_run,
            **{n: (lambda s=s: ort_run(s)) for n, s in sessions.items()}}
    for r in runs.values():
        r()  # warm-up
    best = {n: [float("inf"), float("inf")] for n in runs}
    for _ in range(repeat):
        for n, r in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            r()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[n] = [min(best[n][0], wall), min(best[n][1], cpu)]
    crops = sum(len(x) for x, _ in batches)
    base = best["torch float32"][1]
    return {n: {"crops_per_s": round(crops / w, 1), "crops_per_cpu_s": round(crops / c, 1),
                "x_torch_cpu": round(base / c, 2)} for n, (w, c) in best.items()}


def end_to_end(ckpt: Path, files: dict[str, Path], repeat: int, tmp: Path) -> dict:
    """Detections/s of ``refine_files`` with each ONNX file and of the torch network alone."""
    results, image_list = make_inputs(tmp, 64)
    n = len(json.loads(results.read_text()))
    e2e: dict[str, list[float]] = {name: [] for name in files}
    e2e_cpu: dict[str, list[float]] = {name: [] for name in files}
    fwd, fwd_cpu = [], []
    for r in range(repeat):
        for name, f in files.items():
            start, cpu = time.perf_counter(), cpu_seconds()
            refine_files(ckpt, DATA, results, tmp / f"out{r}.json", image_list=image_list,
                         options=RefineFileOptions(RefineOptions(batch_size=32, workers=2),
                                                   progress=False, backend="onnxruntime",
                                                   onnx=f))
            e2e[name].append(time.perf_counter() - start)
            e2e_cpu[name].append(cpu_seconds() - cpu)
        wall, cpu = forward_only(ckpt, results, image_list, 32, "cpu", True)
        fwd.append(wall)
        fwd_cpu.append(cpu)
    out = {"detections": n, "torch float32 network alone": {
        "det_per_s": round(n / min(fwd), 2), "det_per_cpu_s": round(n / min(fwd_cpu), 2)}}
    for name in files:
        out[f"end to end, {name}"] = {
            "det_per_s": round(n / min(e2e[name]), 2),
            "det_per_cpu_s": round(n / min(e2e_cpu[name]), 2),
            "x_network_alone": round(min(fwd) / min(e2e[name]), 2),
            "x_network_alone_cpu": round(min(fwd_cpu) / min(e2e_cpu[name]), 2)}
    return out


def accuracy(ckpt: Path, files: dict[str, Path], tmp: Path) -> list[dict]:
    """AP after ``posefix refine --onnx`` per LSP test input and file; keypoint changes."""
    rows = []
    for inp in INPUTS:
        outs = {}
        row: dict = {"input": inp}
        for name, f in files.items():
            out = tmp / f"{inp}_{name.replace(' ', '_')}.json"
            cmd = [sys.executable, "-m", "posefix", "refine", "--backend", "onnxruntime",
                   "--onnx", str(f), "--checkpoint", str(ckpt), "--images", str(LSP),
                   "--results", str(LSP / f"{inp}.json"), "--gt", str(LSP / "coco17.json"),
                   "--split", "test", "--out", str(out), "--json"]
            s = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                          text=True).stdout)
            row["AP_before"] = round(s["ap_before"]["AP"], 6)
            row[f"AP {name}"] = round(s["ap_after"]["AP"], 6)
            outs[name] = json.loads(out.read_text())
        a, b = (outs[n] for n in files)
        if len(a) == len(b) and all(u["image_id"] == v["image_id"] for u, v in zip(a, b, strict=True)):
            ka = np.array([e["keypoints"] for e in a]).reshape(len(a), -1, 3)[..., :2]
            kb = np.array([e["keypoints"] for e in b]).reshape(len(b), -1, 3)[..., :2]
            d = np.linalg.norm(ka - kb, axis=-1)
            ds = np.abs(np.array([e["score"] for e in a]) - np.array([e["score"] for e in b]))
            row.update(keypoint_diff_max_px=round(float(d.max()), 3),
                       keypoint_diff_mean_px=round(float(d.mean()), 4),
                       keypoints_differing=int((d > 0.01).sum()), keypoints=int(d.size),
                       score_diff_max=round(float(ds.max()), 4),
                       score_diff_mean=round(float(ds.mean()), 5))
        else:
            row["detections"] = [len(a), len(b)]  # OKS-NMS kept different ones
        rows.append(row)
    return rows


def main() -> None:
    """Export, quantize, measure; print one JSON line and a summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    ap.add_argument("--copies", type=int, default=2, help="x 128 crops per round")
    ap.add_argument("--end-to-end", action="store_true", help="refine_files, file in -> out")
    ap.add_argument("--accuracy", action="store_true", help="AP on LSP test (../shared)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = a.checkpoint or default_checkpoint_path()
    report: dict = {"checkpoint": str(ckpt), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        start = time.perf_counter()
        files = {"onnxruntime float32": export_onnx(ckpt, tmp / "float32.onnx")}
        report["export_s"] = round(time.perf_counter() - start, 2)
        cal = load_calibration()
        start = time.perf_counter()
        files["onnxruntime int8"] = quantize_onnx(
            files["onnxruntime float32"], tmp / "int8.onnx",
            calibration_batches(cal.crops, cal.poses, load_spec(cal.spec).flip_index))
        report["quantize_s"] = round(time.perf_counter() - start, 2)
        report["per_crop"] = per_crop(ckpt, files, a.repeat, a.copies)
        if a.end_to_end:
            report["end_to_end"] = end_to_end(ckpt, files, a.repeat, tmp)
        if a.accuracy:
            report["accuracy"] = accuracy(ckpt, files, tmp)
    print(json.dumps(report))
    print(f"one thread; export {report['export_s']} s, quantization {report['quantize_s']} s")
    for name, v in report["per_crop"].items():
        print(f"  {name:22s} {v['crops_per_s']:7.1f} crops/s, {v['crops_per_cpu_s']:7.1f} "
              f"per CPU-second ({v['x_torch_cpu']:.2f}x torch float32)")
    for name, v in report.get("end_to_end", {}).items():
        if isinstance(v, dict):
            print(f"  {name:40s} {v['det_per_s']:6.1f} det/s, {v['det_per_cpu_s']:6.1f} per "
                  f"CPU-second" + (f" ({v['x_network_alone']:.2f}x the network alone, "
                                   f"{v['x_network_alone_cpu']:.2f}x per CPU-second)"
                                   if "x_network_alone" in v else ""))
    for row in report.get("accuracy", []):
        print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
