"""Throughput of ``posefix refine``: detections per second end to end against the bare
network on the same batches already in memory.

The input is the real BlazePose output of ../shared/data/coco, repeated over ``--images``
image ids (an image list maps them all to the four COCO images, so every id is decoded and
cropped again). End to end is :func:`posefix.commands.refine.refine_files`, file in -> file out
(checkpoint loading, JSON reading and validation, image decoding and cropping in the
loader threads, flip test, uncropping, OKS-NMS, atomic JSON write). The baseline
runs only ``PoseFixNet.predict`` on the very same network inputs (normalized crops with
their mirrored copies, rendered by the pipeline beforehand and held in memory).

    python benchmarks/bench_refine.py                     # r50_256x192 architecture
    python benchmarks/bench_refine.py --config tiny_cpu   # the tiny CPU model

End to end runs once per ``--backends`` entry (default ``auto,torch``: the default backend,
ONNX Runtime on a CPU, and the exact PyTorch float32 path), interleaved with the network
alone (PyTorch float32), so that the ratio default / network alone is measured side by side.
The default backend's one-off ONNX export (then cached per checkpoint) is timed apart,
before the rounds.

The weights are random unless ``--checkpoint`` is given: speed does not depend on them.
Runs are interleaved and the best of ``--repeat`` kept. Besides wall-clock rates the
benchmark reports CPU seconds (this process and its loader threads), which other loads on
a shared machine do not inflate.

``--compare-scores CHECKPOINT`` instead measures the AP of both output scores
(``--score input`` and ``--score heatmap``) on the real estimators' outputs of
../shared/data, on the images held out from the demo split (``recipes/demo/split.yaml``)
and on all images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from posefix.checkpoint import load_checkpoint, save_checkpoint
from posefix.commands.refine import refine_files
from posefix.config import load_config
from posefix.crops import CropDataset, group_by_image
from posefix.decoding import Decoding
from posefix.images import load_image_list
from posefix.io import load_ground_truth, load_results
from posefix.model import build_model
from posefix.options import RefineFileOptions, RefineOptions
from posefix.refiner import Refiner
from posefix.spec import load_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "coco"
HELD_OUT = {"coco": ["000000040083.jpg", "000000196141.jpg"], "ochuman": ["003896.jpg"]}
SETS = {
    "coco": ("test_coco.json", ["blazepose_gtboxes.json", "blazepose_detboxes.json",
                                "movenet_multipose.json"]),
    "ochuman": ("test_ochuman.json", ["blazepose_gtboxes.json", "movenet_multipose.json"]),
}


def make_inputs(tmp: Path, n_images: int) -> tuple[Path, Path]:
    """A results file and image list: the BlazePose detections on ``n_images`` image ids."""
    gt = json.loads((DATA / "test_coco.json").read_text())
    dets = json.loads((DATA / "blazepose_gtboxes.json").read_text())
    images, results = [], []
    per = {im["id"]: [d for d in dets if d["image_id"] == im["id"]] for im in gt["images"]}
    for i in range(n_images):
        im = gt["images"][i % len(gt["images"])]
        new_id = 1_000_000 + i
        images.append({**im, "id": new_id})
        results += [{**d, "image_id": new_id} for d in per[im["id"]]]
    (tmp / "list.json").write_text(json.dumps({"images": images}))
    (tmp / "results.json").write_text(json.dumps(results))
    return tmp / "results.json", tmp / "list.json"


def cpu_seconds() -> float:
    """CPU time of this process (with its loader threads) and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def forward_only(ckpt_path: Path, results: Path, image_list: Path, batch_size: int,
                 device: str, flip: bool) -> tuple[float, int]:
    """Seconds for the network alone over the pipeline's batches, held in memory."""
    ckpt = load_checkpoint(ckpt_path)
    spec = ckpt.spec
    net = ckpt.model.to(device).eval()
    refiner = Refiner(net.predict, net.input_size, spec, device, Decoding(flip=flip))
    infos = load_image_list(image_list)
    dets = load_results(results, spec, image_ids=infos)
    tasks = group_by_image(dets.image_ids, max(batch_size, 64))
    d = dets
    paths = {i: DATA / infos[i].file_name for i in infos}
    ds = CropDataset(tasks, d.keypoints, d.boxes, paths, {}, spec, net.input_size,
                      ckpt.config.data.bbox_padding, "pose", "auto")
    items = [ds[i] for i in range(len(ds))]
    crops = np.concatenate([it["crops"] for it in items])
    poses = np.concatenate([it["poses"] for it in items])
    batches = [tuple(torch.from_numpy(a).to(device)
                     for a in refiner.prepare(crops[i:i + batch_size], poses[i:i + batch_size]))
               for i in range(0, len(crops), batch_size)]
    with torch.inference_mode():
        net.predict(*batches[0])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), cpu_seconds()
        for x, p in batches:
            net.predict(x, p)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return time.perf_counter() - start, cpu_seconds() - cpu


def compare_scores(checkpoint: Path, workers: int, device: str) -> list[dict]:
    """AP before refinement and after it with each output score, per data set and input."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # detections on images outside a subset are dropped
        tmp = Path(tmp_s)
        for name, (gt_name, inputs) in SETS.items():
            gt = load_ground_truth(SHARED / name / gt_name, spec="coco17")
            held = [i for i, im in gt.images.items() if im.file_name in HELD_OUT[name]]
            rows_held = np.flatnonzero(np.isin(gt.image_ids, held))
            subsets = {"held-out": tmp / f"{name}_held.json", "all": SHARED / name / gt_name}
            subsets["held-out"].write_text(json.dumps(gt.subset(rows_held, held).to_coco()))
            for split, gt_path in subsets.items():
                for results in inputs:
                    row = {"set": name, "images": split, "input": results}
                    for score in ("input", "heatmap"):
                        options = RefineFileOptions(RefineOptions(
                            score=score, workers=workers, device=device), progress=False)
                        s = refine_files(checkpoint, SHARED / name, SHARED / name / results,
                                         tmp / f"{name}_{split}_{score}.json", gt=gt_path,
                                         options=options)
                        row["AP_before"] = round(100 * s["ap_before"]["AP"], 1)
                        row[f"AP_{score}"] = round(100 * s["ap_after"]["AP"], 1)
                    rows.append(row)
    return rows


def main() -> None:
    """Run the benchmark and print one JSON line and a readable summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="r50_256x192", help="model architecture (config)")
    ap.add_argument("--checkpoint", default=None, help="trained checkpoint (default: random)")
    ap.add_argument("--images", type=int, default=64, help="image ids (x2.5 detections)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--backends", default="auto,torch",
                    help="comma-separated backends to run end to end (first: the headline)")
    ap.add_argument("--compare-scores", default=None, metavar="CHECKPOINT",
                    help="measure the AP of --score input and heatmap instead")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.compare_scores:
        rows = compare_scores(Path(a.compare_scores), a.workers, a.device)
        print(f"{'set':<8} {'images':<9} {'input':<24} {'before':>6} {'input':>6} "
              f"{'heatmap':>7}")
        for r in rows:
            print(f"{r['set']:<8} {r['images']:<9} {r['input']:<24} {r['AP_before']:>6.1f} "
                  f"{r['AP_input']:>6.1f} {r['AP_heatmap']:>7.1f}")
        for split in ("held-out", "all"):
            sel = [r for r in rows if r["images"] == split]
            d = np.mean([r["AP_heatmap"] - r["AP_input"] for r in sel])
            print(f"mean AP (heatmap - input), {split} images: {d:+.2f}")
        return
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ckpt = Path(a.checkpoint) if a.checkpoint else None
        if ckpt is None:
            cfg = load_config(a.config)
            ckpt = save_checkpoint(tmp / "model.pt", model=build_model(cfg.model, 17),
                                   config=cfg, spec=load_spec("coco17"))
        results, image_list = make_inputs(tmp, a.images)
        n = len(json.loads(results.read_text()))
        backends = a.backends.split(",")
        os.environ["POSEFIX_CACHE"] = str(tmp / "cache")  # the export is timed here
        start = time.perf_counter()
        from posefix.refiner import load_refiner
        described = {b: load_refiner(ckpt, b, device=a.device).description for b in backends}
        first_load = time.perf_counter() - start
        runs: dict[str, dict[str, list[float]]] = {
            b: {"e2e": [], "inner": [], "cpu": []} for b in backends}
        fwd, fwd_cpu = [], []
        for r in range(a.repeat):  # interleaved, so that all see the same machine load
            for b in backends:
                start, cpu = time.perf_counter(), cpu_seconds()
                s = refine_files(ckpt, DATA, results, tmp / f"out{r}_{b}.json",
                                 image_list=image_list, options=RefineFileOptions(RefineOptions(
                                     batch_size=a.batch_size, workers=a.workers,
                                     device=a.device), progress=False, backend=b))
                runs[b]["e2e"].append(time.perf_counter() - start)
                runs[b]["cpu"].append(cpu_seconds() - cpu)
                runs[b]["inner"].append(s["seconds"])
            wall, cpu = forward_only(ckpt, results, image_list, a.batch_size, a.device, True)
            fwd.append(wall)
            fwd_cpu.append(cpu)
        outs = {b: load_results(tmp / f"out0_{b}.json", "coco17").keypoints for b in backends}
    head = backends[0]
    e2e, inner, e2e_cpu = runs[head]["e2e"], runs[head]["inner"], runs[head]["cpu"]
    report = {
        "config": a.config, "detections": n, "images": a.images, "batch_size": a.batch_size,
        "workers": a.workers, "device": a.device, "torch_threads": torch.get_num_threads(),
        "end_to_end_det_per_s": round(n / min(e2e), 2),
        "pipeline_det_per_s": round(n / min(inner), 2),
        "forward_only_det_per_s": round(n / min(fwd), 2),
        "overhead_end_to_end": round(min(e2e) / min(fwd) - 1, 4),
        "overhead_pipeline": round(min(inner) / min(fwd) - 1, 4),
        "end_to_end_cpu_s": round(min(e2e_cpu), 2),
        "forward_only_cpu_s": round(min(fwd_cpu), 2),
        "overhead_cpu": round(min(e2e_cpu) / min(fwd_cpu) - 1, 4),
        "backends": {b: {"description": described[b],
                         "end_to_end_det_per_s": round(n / min(runs[b]["e2e"]), 2),
                         "x_network_alone": round(min(fwd) / min(runs[b]["e2e"]), 2),
                         "max_abs_keypoint_diff_vs_first": float(
                             np.abs(outs[b] - outs[head]).max()) if len(outs[b]) ==
                         len(outs[head]) else None}
                     for b in backends},
        "first_load_and_export_s": round(first_load, 2),
    }
    print(json.dumps(report))
    print(f"{a.config}: {n} detections, flip test on, batch {a.batch_size}, "
          f"{a.workers} workers, {a.device}\n"
          f"  end to end (file in -> file out): {report['end_to_end_det_per_s']:.1f} det/s\n"
          f"  refinement loop (no model load / JSON): {report['pipeline_det_per_s']:.1f} det/s\n"
          f"  network forward only, batches in memory: {report['forward_only_det_per_s']:.1f}"
          f" det/s\n  pipeline cost: {100 * report['overhead_end_to_end']:+.1f}% end to end, "
          f"{100 * report['overhead_pipeline']:+.1f}% refinement loop\n"
          f"  CPU seconds: {report['end_to_end_cpu_s']} end to end, "
          f"{report['forward_only_cpu_s']} forward only "
          f"({100 * report['overhead_cpu']:+.1f}%)")
    for b, v in report["backends"].items():
        print(f"  backend {b} ({v['description']}): {v['end_to_end_det_per_s']:.1f} det/s end "
              f"to end, {v['x_network_alone']:.2f}x the PyTorch float32 network alone")


if __name__ == "__main__":
    main()
