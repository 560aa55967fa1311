"""``posefix demo``: refine the embedded sample with the shipped demonstration model.

The sample (``posefix/assets/sample``) holds real images that the demonstration model never
saw in training, in two parts: three multi-person images (two MS COCO val2017 images, one
OCHuman image) and 40 images of the Leeds Sports Pose test split (``lsp/``, every 20th);
each with its ground truth and real estimators' poses on it, which PoseFix never trained on:
MediaPipe BlazePose run top-down on the ground-truth boxes and MoveNet MultiPose, bottom-up,
on both parts, and the weak PoseNet single-pose (on the ground-truth boxes) on LSP. The demo
refines the five inputs as ``posefix refine`` does, and tells what each step did:

- which keypoints moved, and the keypoint errors fixed and made (as ``refine --gt``);
- the AP change split into its steps, applied in turn: the moved keypoints (with the input
  person scores), the new person scores, and the detections OKS-NMS removed;
- each person whose OKS changed, and which step changed it.

It writes into the output folder:

- ``<part>/refined_<estimator>.json``: the refined COCO keypoint results;
- ``pictures/<part>/<estimator>/``: ground truth | input | refined for the images whose OKS
  rose most (``gain*.png``) and fell most (``loss*.png``), small images enlarged; each moved
  keypoint is marked by a magenta line from its input position, removed detections are grey;
- ``report.md`` and ``report.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..document import Document
from ..io import Detections, GroundTruth
from ..jsonfiles import atomic_write, write_json_atomic
from ..outputs import check_outputs

__all__ = ["SAMPLE_ESTIMATORS", "SAMPLE_INPUTS", "SAMPLE_PARTS", "refine_every_row",
           "run_demo", "sample_dir"]

# Estimator name -> results file name in a part's folder.
SAMPLE_ESTIMATORS = {"blazepose": "blazepose.json", "movenet": "movenet.json",
                     "posenet": "posenet.json"}
# Part name -> folder under the sample (images, annotations.json, estimators' results).
SAMPLE_PARTS = {"multi-person": ".", "lsp": "lsp"}
# The (part, estimator) inputs the demo refines, in order.
SAMPLE_INPUTS = (("multi-person", "blazepose"), ("multi-person", "movenet"),
                 ("lsp", "blazepose"), ("lsp", "movenet"), ("lsp", "posenet"))
_PICTURES_EACH_WAY = 3  # images whose OKS rose most, and as many where it fell most
_NMS = 0.9
_STEP_WORDS = {"keypoints": "moved keypoints", "scores": "new scores (another detection "
               "matched it first)", "nms": "OKS-NMS (its detection removed)"}


def sample_dir() -> Path:
    """Folder of the embedded sample (one folder per part, see ``SAMPLE_PARTS``)."""
    return Path(str(resources.files("posefix").joinpath("assets/sample")))


def refine_every_row(refiner: Any, dets: Detections, images: dict[int, np.ndarray],
                     nms: float = _NMS) -> tuple[Detections, np.ndarray]:
    """Refine as ``posefix refine`` does, but keep every row: (the refined and rescored
    detections row for row with ``dets``, the rows OKS-NMS kept). ``posefix refine``'s
    output is ``refined.select(kept)``."""
    ids = list(dict.fromkeys(dets.image_ids.tolist()))  # in order of first appearance
    rows = [np.flatnonzero(dets.image_ids == i) for i in ids]
    out = refiner.refine_images([images[i] for i in ids], [dets.keypoints[r] for r in rows],
                                [dets.scores[r] for r in rows],
                                boxes=[dets.boxes[r] for r in rows], nms=nms)
    keypoints, scores = dets.keypoints.copy(), dets.scores.copy()
    keep = np.zeros(len(dets), dtype=bool)
    for r, poses in zip(rows, out, strict=True):
        keypoints[r], scores[r], keep[r] = poses.keypoints, poses.scores, poses.kept
    refined = Detections(image_ids=dets.image_ids, keypoints=keypoints, scores=scores,
                         boxes=dets.boxes, category_ids=dets.category_ids)
    return refined, np.flatnonzero(keep)


def _refine_input(refiner: Any, part: str, estimator: str, out: Path) -> dict[str, Any]:
    """Refine one input of the sample; the row of the report, with the pictures drawn."""
    from ..comparison import attribute_change, compare_results, image_oks_change
    from ..diagnosis import classify_keypoints
    from ..evaluate import evaluate
    from ..images import load_image
    from ..io import load_ground_truth, load_results, resolve_image_path

    root = sample_dir() / SAMPLE_PARTS[part]
    gt_path, file = root / "annotations.json", root / SAMPLE_ESTIMATORS[estimator]
    spec = refiner.spec
    truth = load_ground_truth(gt_path, spec=spec, image_root=root)
    dets = load_results(file, spec, image_ids=truth.images, strict=True)
    images = {i: load_image(resolve_image_path(root, truth.images[i].file_name,
                                               source=gt_path), "auto",
                            (truth.images[i].width, truth.images[i].height))
              for i in np.unique(dets.image_ids).tolist()}
    every, kept = refine_every_row(refiner, dets, images)
    final = every.select(kept)
    refined_path = out / part / f"refined_{estimator}.json"
    refined_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(refined_path, final.to_json())
    diagnoses = (classify_keypoints(truth, dets), classify_keypoints(truth, final))
    evaluations = (evaluate(truth, dets), evaluate(truth, final))
    summary = compare_results(truth, dets, final, diagnoses, evaluations)
    steps = attribute_change(truth, dets, every, kept, diagnoses=diagnoses,
                             evaluations=evaluations)
    pictures = _draw_pictures(truth, dets, every, kept, steps, image_oks_change(truth, diagnoses),
                              images, out / "pictures" / part / estimator)
    return {
        "part": part, "estimator": estimator, "input": str(file), "refined": str(refined_path),
        "persons": int(truth.counted.sum()), "detections_in": len(dets),
        "detections_out": len(final), "removed_by_nms": len(dets) - len(final),
        "matched_before": summary["matched_before"], "matched_after": summary["matched_after"],
        "ap_before": summary["ap_before"]["AP"], "ap_after": summary["ap_after"]["AP"],
        "ap_parts": steps["parts"], "ap_steps": steps["ap"],
        "ap_scores_only": steps["ap_scores_only"],
        "oks_before": summary["mean_oks_before"], "oks_after": summary["mean_oks_after"],
        "errors_before": summary["errors_before"], "errors_after": summary["errors_after"],
        "error_changes": summary["error_changes"],
        "keypoints_moved": steps["keypoints_moved"], "keypoints_added": steps["keypoints_added"],
        "detections_moved": steps["detections_moved"],
        "removed_matched": steps["removed_matched"],
        "persons_changed": [{**p, "file_name": truth.images[p["image_id"]].file_name}
                            for p in steps["persons"]],
        "pictures": pictures,
    }


def _draw_pictures(truth: GroundTruth, dets: Detections, every: Detections, kept: np.ndarray,
                   steps: dict[str, Any], change: dict[int, float],
                   images: dict[int, np.ndarray], folder: Path) -> list[dict[str, Any]]:
    """Ground truth | input | refined of the images whose summed OKS (``change``: image id
    -> :func:`posefix.comparison.image_oks_change`) rose and fell most; moved keypoints
    marked."""
    from ..comparison import extreme_images
    from ..images import save_png
    from ..visualize import EXAMPLE_MAX_SIDE, EXAMPLE_MIN_SIDE, Panel, render_panels

    folder.mkdir(parents=True, exist_ok=True)
    keep = np.zeros(len(every), dtype=bool)
    keep[kept] = True
    origins = np.where(steps["moved"][..., None], dets.keypoints[..., :2], np.nan)
    written = []
    counts: dict[str, int] = {}
    rose, fell = extreme_images(change, _PICTURES_EACH_WAY)
    for kind, image_id in [("gain", i) for i in rose] + [("loss", i) for i in fell]:
        counts[kind] = counts.get(kind, 0) + 1
        info = truth.images[image_id]
        rows = np.flatnonzero(dets.image_ids == image_id)
        on, off = rows[keep[rows]], rows[~keep[rows]]
        persons = [p for p in steps["persons"] if p["image_id"] == image_id]
        title = [f"{Path(info.file_name).name}: OKS {change[image_id]:+.3f}",
                 f"{int(steps['moved'][rows].sum())} keypoint(s) moved, {len(off)} detection(s)"
                 " removed"]
        title += [f"OKS {_oks(p, 0)} -> {_oks(p, 3)}: "
                  + ", ".join(_STEP_WORDS[c].split(" (")[0] for c in p["causes"])
                  for p in persons[:3]]
        canvas = render_panels(
            images[image_id],
            [Panel("ground truth", truth.keypoints[truth.indices_of_image(image_id)]),
             Panel("input", dets.keypoints[rows], dets.scores[rows]),
             Panel("refined", every.keypoints[on], every.scores[on], origins=origins[on],
                   removed=every.keypoints[off])],
            truth.spec, max_side=EXAMPLE_MAX_SIDE, min_side=EXAMPLE_MIN_SIDE, title=title)
        target = folder / f"{kind}{counts[kind]}_{Path(info.file_name).stem}.png"
        save_png(target, canvas)
        written.append({"kind": kind, "image_id": int(image_id), "file_name": info.file_name,
                        "oks_change": change[image_id], "png": str(target)})
    return written


def _oks(person: dict[str, Any], step: int) -> str:
    return f"{person['oks'][step]:.3f}" if person["matched"][step] else "unmatched"


def _ap_section(doc: Document, rows: list[dict[str, Any]]) -> None:
    doc.heading("AP, and what each step of refinement did to it")
    doc.para("Steps applied in turn: the refined keypoints with the input's person scores, then "
             "the new person scores, then OKS-NMS (threshold 0.9). The three parts add up to "
             "the change. The last column, for comparison: the AP of the input keypoints with "
             "the new scores alone. Persons: counted in the ground truth; matched: with a "
             "detection at OKS 0.1.")
    table = []
    for r in rows:
        b, a, p = r["ap_before"], r["ap_after"], r["ap_parts"]
        table.append([r["part"], r["estimator"],
                      f"{r['matched_before']} -> {r['matched_after']} of {r['persons']}",
                      f"{r['detections_in']} -> {r['detections_out']}", f"{b:.3f}", f"{a:.3f}",
                      f"{a - b:+.3f}", f"{p['keypoints']:+.3f}", f"{p['scores']:+.3f}",
                      f"{p['nms']:+.3f}", f"{r['ap_scores_only']:.3f}"])
    mean_b = sum(r["ap_before"] for r in rows) / len(rows)
    mean_a = sum(r["ap_after"] for r in rows) / len(rows)
    table.append(["all", f"mean of the {len(rows)} inputs", "", "", f"{mean_b:.3f}",
                  f"{mean_a:.3f}", f"{mean_a - mean_b:+.3f}", "", "", "", ""])
    doc.table(["part", "input", "persons matched before -> after", "detections in -> out",
               "AP before", "AP after", "change", "= moved keypoints", "+ new scores",
               "+ OKS-NMS", "AP with new scores alone"], table)


def _keypoint_section(doc: Document, rows: list[dict[str, Any]]) -> None:
    types = ("good", "jitter", "inversion", "swap", "miss")
    doc.heading("Keypoints")
    doc.para("Moved: displaced by refinement (more than 0.05 px; the error gate keeps the "
             "others exactly). Error types (Ronchi & Perona) of the keypoints of the persons "
             "matched both before and after, before -> after, with how many refinement fixed "
             "(the type before, good after) and made (good before, the type after); the "
             "keypoints of persons matched only before or only after are counted apart, so "
             "each row adds up.")
    table = []
    for r in rows:
        ch = r["error_changes"]
        m = np.asarray(ch["transitions"], dtype=np.int64)
        cells = []
        for c, t in enumerate(ch["types"]):
            cell = f"{m[c].sum()} -> {m[:, c].sum()}"
            if t != "good":
                cell += f" (fixed {ch['fixed'][t]}, made {ch['made'][t]})"
            cells.append(cell)
        n_b = sum(r["errors_before"].values()) - int(m.sum())
        n_a = sum(r["errors_after"].values()) - int(m.sum())
        only_b = r["matched_before"] - ch["persons_compared"]
        only_a = r["matched_after"] - ch["persons_compared"]
        table.append([r["part"], r["estimator"],
                      f"{r['keypoints_moved']} ({r['detections_moved']})",
                      ch["persons_compared"], *cells,
                      f"{only_b} ({n_b}) / {only_a} ({n_a})"])
    doc.table(["part", "input", "keypoints moved (detections)", "persons in both", *types,
               "persons matched only before / after (their keypoints)"], table)


def _person_section(doc: Document, rows: list[dict[str, Any]]) -> None:
    doc.heading("Persons whose OKS changed, and why")
    lines = []
    for r in rows:
        changed = r["persons_changed"]
        by = {s: sum(s in p["causes"] for p in changed) for s in _STEP_WORDS}
        head = (f"- **{r['part']} / {r['estimator']}**: {len(changed)} of {r['persons']} "
                f"persons changed OKS (or matched status)")
        if changed:
            head += ": " + ", ".join(f"{n} by {_STEP_WORDS[s].split(' (')[0]}"
                                     for s, n in by.items() if n)
        head += (f". OKS-NMS removed {r['removed_by_nms']} detection(s), "
                 f"{r['removed_matched']} of them matched to a person in the input.")
        lines.append(head)
        biggest = sorted(changed, key=lambda p: -abs(p["change"]))
        shown = [p for p in biggest if p["causes"] != ["keypoints"]] + \
            [p for p in biggest if p["causes"] == ["keypoints"]][:3]
        for p in sorted(shown, key=lambda p: -abs(p["change"])):
            lines.append(f"  - {p['file_name']}: OKS {_oks(p, 0)} -> {_oks(p, 3)} ("
                         + "; ".join(_STEP_WORDS[c] for c in p["causes"]) + ")")
        if len(shown) < len(changed):
            lines.append(f"  - and {len(changed) - len(shown)} more by moved keypoints alone "
                         "(report.json)")
    doc.para("\n".join(lines))


def _picture_section(doc: Document, rows: list[dict[str, Any]]) -> None:
    doc.heading("Pictures")
    doc.para("Ground truth | input | refined, for the images whose summed OKS rose most "
             "(gain*.png) and fell most (loss*.png), ranked as `posefix refine --report` ranks "
             "its examples (posefix.comparison.image_oks_change). In the refined panel a "
             "magenta line runs from each moved keypoint's input position (ring) to its "
             "refined one; detections OKS-NMS removed are grey.")
    lines = []
    for r in rows:
        pics = r["pictures"]
        what = ", ".join(f"{Path(p['png']).name} ({p['oks_change']:+.3f})" for p in pics)
        lines.append(f"- {r['part']} / {r['estimator']}: "
                     + (what or "none: no person's OKS changed"))
    doc.para("\n".join(lines))


def _report_markdown(rows: list[dict[str, Any]]) -> str:
    doc = Document("posefix demo")
    doc.para("The shipped demonstration model (a small MobileNetV2 PoseFix trained on a CPU; "
             "not the paper's COCO-trained model) on the embedded sample: images it never "
             "saw, and real estimators it never trained on.")
    for section in (_ap_section, _keypoint_section, _person_section, _picture_section):
        section(doc, rows)
    return doc.markdown()


def run_demo(out: str | Path = "posefix-demo", checkpoint: str | Path | None = None
             ) -> dict[str, Any]:
    """Refine the embedded sample's estimator outputs; write results, pictures and a report.

    Args:
        out: output folder (created).
        checkpoint: a trained checkpoint (default: the shipped demonstration model).

    Returns:
        The report (also written to ``out/report.json``).
    """
    from ..refiner import load_refiner

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    check_outputs(folders={"--out": out}, inputs={"checkpoint": checkpoint,
                                                  "sample": sample_dir()})
    refiner = load_refiner(checkpoint)  # None: the shipped model, on the default backend
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_refine_input(refiner, part, est, out) for part, est in SAMPLE_INPUTS]
    report = {"sample": str(sample_dir()), "out": str(out), "model": refiner.description,
              "nms": _NMS, "rows": rows}
    write_json_atomic(out / "report.json", json.loads(json.dumps(report, default=str)), indent=2)
    md = _report_markdown(rows)
    atomic_write(out / "report.md", lambda f: f.write(md))
    print(md)
    print(f"refined results: {', '.join(r['refined'] for r in rows)}")
    print(f"pictures: {out / 'pictures'}")
    print(f"report: {out / 'report.md'}")
    return report
