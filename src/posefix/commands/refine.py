"""``posefix refine``: an estimator's results file (or a video's per-frame poses) refined
into a results file, with a summary and, given ground truth, the before/after report.

The refinement itself is :func:`posefix.refine.refine_detections`'; here the files are
read and checked, the refiner is loaded, and the results, summary and report are written.
"""

from __future__ import annotations

import re
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..comparison import compare_results
from ..diagnosis import classify_keypoints
from ..errors import InputError
from ..formats import (
    PoseFile,
    image_keys,
    image_list_from_keys,
    read_poses,
    to_arrays,
    to_detections,
)
from ..images import load_image_list
from ..io import (
    Detections,
    GroundTruth,
    ImageInfo,
    load_ground_truth,
    resolve_image_path,
    write_results,
)
from ..jsonfiles import write_json_atomic
from ..options import RefineFileOptions, RefineOptions, RefinePaths
from ..outputs import folder_inputs
from ..pipeline import RefineCounts
from ..refine import refine_detections
from ..refiner import Refiner, load_refiner
from .preflight import CheckedInputs, check_output, check_refine_paths

__all__ = ["format_summary", "refine_files", "refine_paths", "refine_video_file"]


def refine_files(
    checkpoint: str | Path | None,
    images: str | Path,
    results: str | Path,
    out: str | Path,
    gt: str | Path | None = None,
    image_list: str | Path | None = None,
    report: str | Path | None = None,
    options: RefineFileOptions | None = None,
) -> dict[str, Any]:
    """:func:`refine_paths` with the files as arguments (their meaning: :class:`RefinePaths`)."""
    return refine_paths(RefinePaths(results, out, images, gt, image_list, checkpoint, report),
                        options)


def refine_paths(paths: RefinePaths, options: RefineFileOptions | None = None,
                 checked: CheckedInputs | None = None) -> dict[str, Any]:
    """Refine an estimator's results file into a COCO keypoint results file
    (``posefix refine``).

    Image ids map to files through ``image_list`` (a COCO annotation or image-info JSON
    with ``images``: ``id``, ``file_name``, ``width``, ``height``) or else ``gt``; one of
    them is required (file names are relative to ``images``). With ``gt`` the summary has
    the AP and the keypoint-error diagnosis before and after refinement.

    Args:
        paths: the files (:class:`posefix.options.RefinePaths`). ``results``: COCO results
            in the model's keypoint layout, or mmpose, OpenPose (a file or a folder of
            per-image files) or per-image arrays (:mod:`posefix.formats`); poses keyed by
            image name need no image list (the names are files in ``images``). ``out``:
            written atomically; must not be an input file. ``gt``: for the image list and
            the before/after report. ``image_list``: default ``gt``. ``report``: with
            ``gt``, the before/after figures, ``report.md`` and ``index.html``
            (:func:`posefix.report.write_refine_report`).
        options: how to refine (:class:`posefix.options.RefineFileOptions`: the
            :class:`~posefix.options.RefineOptions`, backend, ONNX file, error gate, input
            format, strictness, split, output format, progress bar; default: its defaults).
        checked: what :func:`posefix.commands.preflight.check_refine_inputs` read of these
            same ``paths`` (a ``ValueError`` for others; ``posefix refine`` checks its inputs
            before importing torch): its path checks are not repeated, and the ground truth, image list and COCO
            results it parsed are used instead of reading the files again (default: checked
            and read here).

    Returns:
        The summary: counts, settings, timing, ``ap_before``/``ap_after`` and
        ``errors_before``/``errors_after``/``error_changes`` and
        ``mean_oks_before``/``mean_oks_after`` (of the detections matched to a person) and
        ``mean_oks_both`` (before and after, of the persons matched both times) with
        ``gt``, and ``text`` (a readable report).
    """
    o = options if options is not None else RefineFileOptions()
    if checked is not None and checked.paths != paths:
        raise ValueError(f"checked inputs are of {checked.paths}, not of {paths}")
    fmt = checked.format if checked is not None else check_refine_paths(paths, o)
    refiner = load_refiner(paths.checkpoint, o.backend, o.onnx, device=o.refine.device,
                           flip=o.refine.flip, error_gate=o.error_gate)
    inputs = _read_inputs(refiner, paths, fmt, o, checked)
    results, report = paths.results, paths.report
    with_box = _boxes_given(inputs.dets, o.refine.box, results)
    paths_of = _image_paths(inputs, paths.images, o.refine.skip_missing)
    sizes = {i: (inputs.infos[i].width, inputs.infos[i].height) for i in paths_of}
    show = o.progress if o.progress is not None else sys.stderr.isatty()
    start = time.perf_counter()
    refined, counts = refine_detections(
        inputs.dets, paths_of, refiner, None, _run_options(o.refine, show),
        image_sizes=sizes, inplace=inputs.truth is None and report is None)  # else compared
    seconds = time.perf_counter() - start
    _write_refined(paths.out, refined, o.out_format, inputs.poses, inputs.infos)

    summary = _summary(refiner, o.refine, counts, seconds, results=str(results),
                       out=str(paths.out))
    summary["box_from_bbox"] = with_box
    if inputs.truth is not None:
        diagnoses = (classify_keypoints(inputs.truth, inputs.dets),
                     classify_keypoints(inputs.truth, refined))
        summary.update(compare_results(inputs.truth, inputs.dets, refined, diagnoses))
        if report is not None:
            from ..report import write_refine_report  # matplotlib: only for a report

            summary["report"] = str(write_refine_report(
                inputs.truth, inputs.dets, refined, report, images=paths_of, summary=summary,
                exif=o.refine.exif, diagnoses=diagnoses)["index"])
    summary["text"] = format_summary(summary)
    return summary


@dataclass
class _Inputs:
    """What :func:`refine_files` read: the ground truth (or None), the image list, the
    poses as read and as detections, and the file that maps image ids to files."""

    truth: GroundTruth | None
    infos: dict[int, ImageInfo]
    poses: PoseFile
    dets: Detections
    list_path: Path


def _read_inputs(refiner: Refiner, paths: RefinePaths, fmt: str | None,
                 o: RefineFileOptions, checked: CheckedInputs | None) -> _Inputs:
    """Read the ground truth, the image list and the results in the refiner's layout (what
    ``checked`` holds of them is not read again)."""
    spec, root, results = refiner.spec, paths.images, paths.results
    gt, image_list = paths.gt, paths.image_list
    truth = None
    if checked is not None and checked.truth is not None and checked.truth.spec == spec:
        truth = replace(checked.truth, spec=spec, image_root=root)  # the model's layout
    elif gt is not None:
        truth = load_ground_truth(gt, spec=spec, image_root=root, split=o.split)
    listed = checked.image_list if checked is not None else None
    infos = (listed if listed is not None else load_image_list(image_list)) \
        if image_list is not None else dict(truth.images) if truth is not None else None
    if o.split is not None:
        infos = {i: infos[i] for i in truth.images if i in infos}
    poses = read_poses(results, spec, fmt, infos, o.strict,
                       coco=checked.results if checked is not None else None)
    if infos is None:
        infos = image_list_from_keys(poses.keys, root, results)
    dets = to_detections(poses, infos, results, o.strict)
    list_path = image_list if image_list is not None else gt if gt is not None else results
    return _Inputs(truth, infos, poses, dets, list_path)


def _boxes_given(dets: Detections, box: str, results: str | Path) -> int | None:
    """With ``box="bbox"``: how many detections have a box of positive size (the others'
    crops come from the pose, with a warning); none is an :class:`InputError`. None for
    ``box="pose"``."""
    if box != "bbox":
        return None
    b = dets.boxes
    good = int((np.isfinite(b).all(1) & (b[:, 2] > 0) & (b[:, 3] > 0)).sum())
    if len(dets) and not good:
        raise InputError(results, f"--box bbox: none of the {len(dets)} detections has a "
                         "'bbox' (of positive size); use --box pose", field_name="bbox")
    if good < len(dets):
        warnings.warn(f"{results}: --box bbox: {len(dets) - good} of {len(dets)} detections "
                      "have no 'bbox': their crops come from the pose", stacklevel=3)
    return good


def _image_paths(inputs: _Inputs, root: Path, skip_missing: bool) -> dict[int, Path]:
    """Image id -> file of every image with a detection; a missing file is an error
    unless ``skip_missing``."""
    paths: dict[int, Path] = {}
    missing = []
    for image_id in np.unique(inputs.dets.image_ids).tolist():
        p = resolve_image_path(root, inputs.infos[image_id].file_name,
                               source=inputs.list_path, must_exist=False)
        paths[image_id] = p
        if not p.is_file():
            missing.append(p)
    if missing and not skip_missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(missing[0], f"image does not exist{more}; image ids map to files "
                         f"through {inputs.list_path} (use --skip-missing to keep their "
                         "detections unrefined)")
    return paths


def _run_options(options: RefineOptions, progress: bool) -> RefineOptions:
    """``options`` for the refiner built from them: its flip test and device are its own."""
    return replace(options, flip=None, device=None, progress=progress)


def _summary(refiner: Refiner, options: RefineOptions, counts: RefineCounts, seconds: float,
             **files: str) -> dict[str, Any]:
    """The summary's files, settings, counts and timing."""
    decoding = refiner.decoding.changed(score=options.score, nms=options.nms)
    return {
        **files, "backend": refiner.description, "device": str(refiner.device),
        "spec": refiner.spec.name, "box": options.box, "flip": refiner.flip,
        "score": decoding.score, "nms": float(decoding.nms), "gate": decoding.gate,
        "decoding": decoding.describe(),
        "batch_size": int(options.batch_size), "workers": int(options.workers),
        **counts.to_dict(), "seconds": round(seconds, 3),
        "detections_per_second": round(counts.detections_in / seconds, 2) if seconds else None,
    }


def _write_refined(out: Path, refined: Detections, out_format: str, poses: PoseFile,
                   images: dict[int, ImageInfo], frame_numbers: bool = False) -> None:
    """Write the refined results atomically: COCO results, or (``out_format`` ``arrays``)
    arrays keyed as the input ``poses`` named the images (:func:`posefix.formats.image_keys`)."""
    if out_format == "coco":
        write_results(out, refined)
    else:
        write_json_atomic(out, to_arrays(refined, image_keys(poses, images,
                                                             frame_numbers=frame_numbers)))


def refine_video_file(checkpoint: str | Path | None, video: str | Path, results: str | Path,
                      out: str | Path, options: RefineFileOptions | None = None
                      ) -> dict[str, Any]:
    """Refine an estimator's per-frame poses on a video (``posefix refine --video``).

    ``results`` is in any format of :mod:`posefix.formats`, keyed by frame index (COCO's
    ``image_id``, mmpose's ``frame_id``, an arrays key, an OpenPose file name ending in the
    frame number). Frames are streamed with OpenCV and each is refined on its own (no
    temporal model). Writes COCO results (image id = frame index; or ``out_format="arrays"``
    keyed as the input) to ``out``, atomically; returns the summary of :func:`refine_files`
    (without ground truth). ``options`` as for :func:`refine_files` (there is no image
    list or split: frames are images 0, 1, ...).
    """
    from ..video import frame_list, refine_video

    o = options if options is not None else RefineFileOptions()
    if o.split is not None:
        raise InputError(Path(video), "--split does not apply to --video (frames are images "
                         "0, 1, ...)")
    results_p, out_p = Path(results), Path(out)
    check_output(out_p, {"results": folder_inputs(results_p), "video": video,
                         "checkpoint": checkpoint, "onnx": o.onnx}, o.out_format)
    refiner = load_refiner(checkpoint, o.backend, o.onnx, device=o.refine.device,
                           flip=o.refine.flip, error_gate=o.error_gate)
    frames = frame_list(video)  # the container's count, which may be off: keep every index
    poses = read_poses(results_p, refiner.spec, o.format, None, o.strict)
    for key in poses.keys:
        tail = re.search(r"(\d+)$", str(key))
        if tail:
            frames.setdefault(int(tail.group(1)), ImageInfo(int(tail.group(1)), "", 0, 0))
    dets = to_detections(poses, frames, results_p, o.strict, frame_numbers=True)
    with_box = _boxes_given(dets, o.refine.box, results_p)
    show = o.progress if o.progress is not None else sys.stderr.isatty()
    start = time.perf_counter()
    refined, counts = refine_video(dets, video, refiner, _run_options(o.refine, show))
    seconds = time.perf_counter() - start
    _write_refined(out_p, refined, o.out_format, poses, frames, frame_numbers=True)
    summary = _summary(refiner, replace(o.refine, workers=0), counts,
                       seconds, results=str(results_p), video=str(video), out=str(out_p))
    summary["box_from_bbox"] = with_box
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
    box = s["box"]
    if s.get("box_from_bbox") is not None and s["box_from_bbox"] < s["detections_in"]:
        box = f"bbox ({s['box_from_bbox']} of {s['detections_in']}; the rest from the pose)"
    lines.append(f"  {s['backend']} on {s['device']}, box from {box}: {s['seconds']:.1f} s"
                 + (f" ({rate:.1f} detections/s)" if rate else ""))
    lines.append(f"  decoding: {s['decoding']}")
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
