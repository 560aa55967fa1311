"""``posefix refine``: an estimator's results file (or a video's per-frame poses) refined
into a results file, with a summary and, given ground truth, the before/after report.

The refinement itself is :func:`posefix.refine.refine_detections`'; here the files are
read and checked, the refiner is loaded, and the results, summary and report are written.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..comparison import compare_results
from ..formats import (
    OUT_FORMATS,
    image_keys,
    image_list_from_keys,
    read_poses,
    to_arrays,
    to_detections,
)
from ..images import load_image_list
from ..io import (
    ImageInfo,
    InputError,
    load_ground_truth,
    resolve_image_path,
    write_json_atomic,
)
from ..pipeline import DEFAULT_SCORE, RefineOptions
from ..preflight import check_refine_paths, same_file
from ..refine import refine_detections
from ..refiner import Refiner, load_refiner

__all__ = ["format_summary", "refine_files", "refine_video_file"]


def refine_files(
    checkpoint: str | Path | None,
    images: str | Path,
    results: str | Path,
    out: str | Path,
    gt: str | Path | None = None,
    image_list: str | Path | None = None,
    box: str = "pose",
    flip: bool = True,
    score: str = DEFAULT_SCORE,
    nms: float = 0.9,
    batch_size: int = 32,
    workers: int = 2,
    device: str = "auto",
    backend: str = "torch",
    onnx: str | Path | None = None,
    skip_missing: bool = False,
    strict: bool = False,
    *,
    exif: str = "auto",
    progress: bool | None = None,
    report: str | Path | None = None,
    error_gate: float | None = None,
    split: str | None = None,
    format: str | None = None,
    out_format: str = "coco",
) -> dict[str, Any]:
    """Refine an estimator's results file into a COCO keypoint results file
    (``posefix refine``).

    Image ids map to files through ``image_list`` (a COCO annotation or image-info JSON
    with ``images``: ``id``, ``file_name``, ``width``, ``height``) or else ``gt``; one of
    them is required (file names are relative to ``images``). With ``gt`` the summary has
    the AP and the keypoint-error diagnosis before and after refinement.

    Args:
        checkpoint: trained checkpoint (None: the shipped demo model).
        images: image folder.
        results: input results: COCO results in the model's keypoint layout, or mmpose,
            OpenPose (a file or a folder of per-image files) or per-image arrays
            (:mod:`posefix.formats`); poses keyed by image name need no image list (the
            names are files in ``images``).
        out: output results JSON, written atomically; must not be an input file.
        gt: COCO keypoint annotations, for the image list and the before/after report.
        image_list: image-id -> file mapping (default: ``gt``).
        box, flip, score, nms, batch_size, workers, device, exif, skip_missing: see
            :func:`refine`.
        backend: ``"torch"`` or ``"onnxruntime"``.
        onnx: the ONNX file for ``onnxruntime`` (default: export ``checkpoint`` to a
            temporary file).
        strict: detections of images not in the image list are an error (default:
            skipped with a warning).
        progress: progress bar (default: when stderr is a terminal).
        error_gate: keep every input keypoint whose probability of being a gross error
            (the network's error head) is below this; 0 refines every keypoint (default:
            the checkpoint's ``model.error_gate``).
        report: with ``gt``, write the before/after figures, ``report.md`` and
            ``index.html`` into this folder (:func:`posefix.report.write_refine_report`).
        split: with ``gt``, only its images whose ``split`` field has this value (e.g.
            LSP's ``test``): the detections of other images are skipped.
        format: the format of ``results`` (:data:`posefix.formats.FORMATS`; default:
            detected).
        out_format: ``"coco"`` results, or ``"arrays"`` keyed as the input's images
            (:func:`posefix.formats.to_arrays`).

    Returns:
        The summary: counts, settings, timing, ``ap_before``/``ap_after`` and
        ``errors_before``/``errors_after``/``error_changes`` and
        ``mean_oks_before``/``mean_oks_after`` (of the detections matched to a person) with
        ``gt``, and ``text`` (a readable report).
    """
    results_p, out_p, root = Path(results), Path(out), Path(images)
    fmt = check_refine_paths(results, out, images, gt, image_list, checkpoint, onnx, report,
                             split, format)
    if out_format not in OUT_FORMATS:
        raise ValueError(f"out_format must be one of {', '.join(OUT_FORMATS)}, got "
                         f"{out_format!r}")
    list_path = Path(image_list if image_list is not None else gt
                     if gt is not None else results_p)

    refiner = load_refiner(checkpoint, backend, onnx, device=device, flip=flip,
                           error_gate=error_gate)
    spec = refiner.spec
    truth = load_ground_truth(gt, spec=spec, image_root=root, split=split) \
        if gt is not None else None
    infos = load_image_list(image_list) if image_list is not None else \
        dict(truth.images) if truth is not None else None
    if split is not None:
        infos = {i: infos[i] for i in truth.images if i in infos}
    poses = read_poses(results_p, spec, fmt, infos, strict)
    if infos is None:
        infos = image_list_from_keys(poses.keys, root, results_p)
    dets = to_detections(poses, infos, results_p, strict)

    paths: dict[int, Path] = {}
    missing = []
    for image_id in np.unique(dets.image_ids).tolist():
        p = resolve_image_path(root, infos[image_id].file_name, source=list_path,
                               must_exist=False)
        paths[image_id] = p
        if not p.is_file():
            missing.append(p)
    if missing and not skip_missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(missing[0], f"image does not exist{more}; image ids map to files "
                         f"through {list_path} (use --skip-missing to keep their "
                         "detections unrefined)")
    sizes = {i: (infos[i].width, infos[i].height) for i in paths}
    show = progress if progress is not None else sys.stderr.isatty()
    start = time.perf_counter()
    refined, counts = refine_detections(
        dets, paths, refiner, box=box, score=score, nms=nms, batch_size=batch_size,
        workers=workers, image_sizes=sizes, exif=exif, skip_missing=skip_missing,
        progress=show)
    seconds = time.perf_counter() - start
    write_json_atomic(out_p, refined.to_json() if out_format == "coco"
                      else to_arrays(refined, image_keys(poses, infos)))

    summary: dict[str, Any] = {
        "results": str(results_p), "out": str(out_p), "backend": refiner.description,
        "device": str(refiner.device), "spec": spec.name, "box": box, "flip": bool(flip),
        "score": score, "nms": float(nms), "batch_size": int(batch_size), "workers": int(workers),
        **counts.to_dict(), "seconds": round(seconds, 3),
        "detections_per_second": round(counts.detections_in / seconds, 2) if seconds else None,
    }
    if truth is not None:
        summary.update(compare_results(truth, dets, refined))
    if report is not None:
        from ..report import write_refine_report  # matplotlib: only for a report

        summary["report"] = str(write_refine_report(
            truth, dets, refined, report, images=paths, summary=summary, exif=exif)["index"])
    summary["text"] = format_summary(summary)
    return summary


def refine_video_file(refiner: Refiner, video: str | Path, results: str | Path,
                      out: str | Path, options: RefineOptions, format: str | None = None,
                      strict: bool = False, out_format: str = "coco") -> dict[str, Any]:
    """Refine an estimator's per-frame poses on a video (``posefix refine --video``).

    ``results`` is in any format of :mod:`posefix.formats`, keyed by frame index (COCO's
    ``image_id``, mmpose's ``frame_id``, an arrays key, an OpenPose file name ending in the
    frame number). Frames are streamed with OpenCV and each is refined on its own (no
    temporal model). Writes COCO results (image id = frame index; or ``out_format="arrays"``
    keyed as the input) to ``out``, atomically; returns the summary of :func:`refine_files`
    (without ground truth).
    """
    from ..video import frame_list, refine_video

    results_p, out_p = Path(results), Path(out)
    for name, p in (("results", results_p), ("video", Path(video))):
        if same_file(out_p, p):
            raise InputError(out_p, f"refusing to write over the input {name} file; "
                             "choose another --out")
    frames = frame_list(video)  # the container's count, which may be off: keep every index
    poses = read_poses(results_p, refiner.spec, format, None, strict)
    for key in poses.keys:
        tail = re.search(r"(\d+)$", str(key))
        if tail:
            frames.setdefault(int(tail.group(1)), ImageInfo(int(tail.group(1)), "", 0, 0))
    dets = to_detections(poses, frames, results_p, strict, frame_numbers=True)
    start = time.perf_counter()
    refined, counts = refine_video(dets, video, refiner, options)
    seconds = time.perf_counter() - start
    write_json_atomic(out_p, refined.to_json() if out_format == "coco" else
                      to_arrays(refined, image_keys(poses, frames, frame_numbers=True)))
    summary: dict[str, Any] = {
        "results": str(results_p), "video": str(video), "out": str(out_p),
        "backend": refiner.description, "device": str(refiner.device),
        "spec": refiner.spec.name, "box": options.box, "flip": refiner.flip,
        "score": options.score, "nms": float(options.nms), "batch_size": options.batch_size,
        "workers": 0, **counts.to_dict(), "seconds": round(seconds, 3),
        "detections_per_second": round(counts.detections_in / seconds, 2) if seconds else None,
    }
    summary["text"] = format_summary(summary) + ("\n  frames of " + str(video) + " refined "
                                                 "one by one (no temporal model)")
    return summary


def format_summary(s: Mapping[str, Any]) -> str:
    """The readable report of :func:`refine_files`' summary."""
    lines = [
        f"refined {s['results']} -> {s['out']}",
        f"  {s['detections_in']} detections in {s['images']} images; refined {s['refined']}, "
        f"unchanged {s['unchanged_no_keypoints']} (no keypoint inside the image)",
    ]
    if s["skipped_missing_image"] or s["skipped_unreadable_image"]:
        lines.append(f"  skipped (kept unrefined): {s['skipped_missing_image']} on missing "
                     f"images, {s['skipped_unreadable_image']} on unreadable images")
        lines += [f"    {b}" for b in s["bad_images"][:5]]
        if len(s["bad_images"]) > 5:
            lines.append(f"    ... and {len(s['bad_images']) - 5} more")
    if s["image_size_mismatch"]:
        lines.append(f"  warning: {s['image_size_mismatch']} image(s) differ in size from "
                     "the image list")
    nms = f"OKS-NMS {s['nms']:g} suppressed {s['suppressed_nms']}" if s["nms"] > 0 else "no NMS"
    lines.append(f"  {nms}; wrote {s['detections_out']} detections")
    rate = s.get("detections_per_second")
    lines.append(f"  {s['backend']} on {s['device']}, box from {s['box']}, flip test "
                 f"{'on' if s['flip'] else 'off'}, score {s['score']}: {s['seconds']:.1f} s"
                 + (f" ({rate:.1f} detections/s)" if rate else ""))
    if "ap_before" in s:
        b, a = s["ap_before"], s["ap_after"]
        lines += ["", f"  {'':<6} {'before':>7} {'after':>7} {'change':>7}"]
        for k in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
            if b[k] < 0 or a[k] < 0:
                lines.append(f"  {k:<6} {'-':>7} {'-':>7} {'':>7}")
            else:
                lines.append(f"  {k:<6} {100 * b[k]:7.1f} {100 * a[k]:7.1f} "
                             f"{100 * (a[k] - b[k]):+7.1f}")
        eb, ea, ch = s["errors_before"], s["errors_after"], s["error_changes"]
        lines += ["", f"  keypoints of matched persons ({s['matched_before']} before, "
                  f"{s['matched_after']} after; {ch['persons_compared']} in both):",
                  f"  {'type':<10} {'before':>7} {'after':>7} {'fixed':>7} {'made':>7}"]
        for t in ch["types"]:
            fixed = ch["fixed"].get(t, "")
            made = ch["made"].get(t, "")
            lines.append(f"  {t:<10} {eb[t]:>7} {ea[t]:>7} {fixed!s:>7} {made!s:>7}")
        lines.append("  (fixed: the type before, good after; made: good before, the type after)")
    return "\n".join(lines)
