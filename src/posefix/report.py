"""Diagnosis reports people can look at: figures, ``report.md`` and ``index.html``.

:func:`write_analysis_report` (``posefix analyze --report DIR``) draws one set of results'
:func:`posefix.diagnosis.run_analysis`; :func:`write_refine_report` (``posefix refine
--report DIR``) draws the input and the refined results side by side, what refinement did
to each keypoint's error type, and the images whose OKS changed most. The figures are the
ones coco-analyze (Ronchi & Perona, ICCV 2017) is known for:

* ``pr_oks50.png``, ``pr_oks75.png``: the precision-recall curves at one OKS threshold,
  stacked: the results as they are, then with misses, swaps, inversions and jitter fixed
  cumulatively, then without background false positives and without false negatives. The
  area under each curve (its legend) is the AP at that threshold: the curves are the
  :class:`posefix.evaluate.PRCurves` that the report's AP numbers are summarized from.
* ``error_types.png``: the share of each keypoint error type overall, per body group and
  per keypoint;
* ``oks_histogram.png``: the OKS of the detections matched to a person;
* ``size.png``: found and missed persons, and matched, duplicate and background false
  positive detections, by person size, with the AP per COCO area range.

The figures are :mod:`posefix.figures`' and the pages :mod:`posefix.document`'s. Every
figure uses the colours of :data:`posefix.figures.PALETTE`, one per error type. Each writer returns
the paths it wrote and the numbers it drew (``drawn``, also in ``figures.json``), so tests
can hold them against ``--json``. Files are written atomically and ``index.html`` last: a
folder without it is not a finished report (a rerun first removes the old one).
"""


from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .comparison import MIN_CHANGE, extreme_images, image_oks_change, persons_oks_change
from .diagnosis import (
    PR_STEP_LABELS,
    PR_STEPS,
    PR_THRESHOLDS,
    Analysis,
    Diagnosis,
    run_analysis,
)
from .document import Document, ReportFolder
from .figures import (
    Column,
    error_type_figure,
    fmt_number,
    labelled_figure,
    oks_figure,
    pr_figure,
    size_figure,
    transition_figure,
)
from .io import Detections, GroundTruth
from .taxonomy import ERROR_TYPES

__all__ = ["write_analysis_report", "write_refine_report"]

# --------------------------------------------------------------------------- sections
def _ap_table(doc: Document, columns: Sequence[Column]) -> None:
    keys = ("AP", "AP50", "AP75", "APm", "APl", "AR")
    doc.table(["results", *keys],
              [[label, *(fmt_number(a.report["ap"][k]) for k in keys)] for label, a in columns])


def _counts_table(doc: Document, columns: Sequence[Column]) -> None:
    keys = (("detections", "num_detections"), ("matched", "matched"),
            ("background FP", "background_false_positives"), ("duplicates", "duplicates"),
            ("missed persons", "missed_ground_truth"),
            ("matched to crowd/unlabelled", "matched_to_ignored"),
            ("beyond maxDets", "beyond_max_dets"))
    doc.table(["results", *(k for k, _ in keys)],
              [[label, *(a.report[k] for _, k in keys)] for label, a in columns])


def _figure_sections(doc: Document, w: ReportFolder, gt: GroundTruth,
                     columns: Sequence[tuple[str, Analysis, Detections]]) -> dict[str, Any]:
    """The figure kinds for one or more columns; returns the numbers drawn."""
    cols = [(label, a) for label, a, _ in columns]
    drawn: dict[str, Any] = {}
    none = [label for label, a in cols if not a.report["num_detections"]]
    unmatched = [label for label, a in cols if not a.report["matched"]]
    if none:
        doc.para(f"{' and '.join(none)}: no detections, so no precision-recall curve, keypoint "
                 "error type or OKS to draw; their panels say so.")
    elif unmatched:
        doc.para(f"{' and '.join(unmatched)}: no detection matched a person, so no keypoint "
                 "error type or OKS to draw; their panels say so.")
    doc.heading("Precision-recall breakdown")
    doc.para("As coco-analyze draws it: the precision-recall curve of the results as they "
             "are, then with each keypoint error type fixed in turn (misses, then swaps, "
             "inversions and jitter; a fixed keypoint is moved onto its ground truth), then "
             "with every detection unmatched at the threshold ignored (background false "
             "positives, as coco-analyze counts them: duplicates included), then with every "
             "person unmatched at the threshold ignored (false negatives). Each coloured band "
             "is the AP that fixing that kind of error would gain; the number before each "
             "legend entry is the area under that curve, the AP at that OKS threshold.")
    for oks in PR_THRESHOLDS:
        name = f"pr_oks{round(100 * oks)}"
        fig, drawn[name] = pr_figure(cols, oks)
        doc.image(w.figure(f"{name}.png", fig), f"precision-recall breakdown at OKS {oks:.2f}",
                  f"Precision-recall curves at OKS {oks:.2f}, errors fixed cumulatively.")
    keys = [f"{t:.2f}" for t in PR_THRESHOLDS]
    doc.table(["curve", *(f"{label}: AP at OKS {k}" for label, _ in cols for k in keys)],
              [[PR_STEP_LABELS[s], *(fmt_number(a.report["pr_breakdown"][k][s])
                                     for _, a in cols for k in keys)] for s in PR_STEPS])

    doc.heading("Keypoint error types")
    doc.para("Every labelled keypoint of a detection matched to a person (at OKS 0.1) is "
             "good (KS >= 0.85 with its ground truth), jitter (KS >= 0.5), inversion (near "
             "the person's left/right partner keypoint), swap (near another person's "
             "keypoint) or miss (Ronchi & Perona's taxonomy).")
    fig, drawn["error_types"] = error_type_figure(cols)
    doc.image(w.figure("error_types.png", fig), "error types per keypoint",
              "Share of each error type among the labelled keypoints of matched detections: "
              "overall, per body group and per keypoint (n: labelled keypoints).")
    doc.table(["results", "keypoints", *ERROR_TYPES],
              [[label, a.report["keypoints"]["labelled"],
                *(f"{100 * a.report['keypoints']['rates'][t]:.1f}%" for t in ERROR_TYPES)]
               for label, a in cols])

    doc.heading("OKS of matched detections")
    fig, drawn["oks_histogram"] = oks_figure(cols)
    doc.image(w.figure("oks_histogram.png", fig), "histogram of OKS",
              "How well the matched detections fit their person: detections right of the "
              "dashed lines count as true positives at OKS 0.50 and 0.75.")

    doc.heading("Misses and false positives by person size")
    fig, drawn["size"] = size_figure(columns, gt)
    doc.image(w.figure("size.png", fig), "misses and false positives by size",
              "Ground-truth persons found or missed (no detection at OKS 0.1), detections "
              "matched, duplicate (near a person a better-scoring detection took) or "
              "background false positives (below OKS 0.1 with every person), by size; and "
              "the AP of each COCO area range.")
    _counts_table(doc, cols)

    doc.heading("By number of labelled keypoints")
    fig, drawn["labelled"] = labelled_figure(columns, gt)
    doc.image(w.figure("labelled.png", fig), "persons and errors by labelled keypoints",
              "Persons with few labelled keypoints (occluded, truncated) are missed more "
              "often and fit worse: ground-truth persons found or missed and the mean OKS of "
              "those found, and the error types of their keypoints, by the number of "
              "keypoints the person has labelled.")
    return drawn


def _fix_table(doc: Document, report: Mapping[str, Any]) -> None:
    fixes = report["ap_if_fixed"]
    rows = [["(as is)", *(fmt_number(report["ap"][k]) for k in ("AP", "AP50", "AP75")), "+0.000"]]
    entries = [(f"{t} only", e) for t, e in fixes["alone"].items()]
    entries += [(" + ".join(e["fixed"]), e) for e in fixes["cumulative"][1:]]
    entries.append(("no background false positives", fixes["background_false_positives"]))
    rows += [[name, *(fmt_number(e[k]) for k in ("AP", "AP50", "AP75")), f"{e['gain']:+.3f}"]
             for name, e in entries]
    doc.table(["AP if fixed", "AP", "AP50", "AP75", "gain"], rows)


# --------------------------------------------------------------------------- analysis
def write_analysis_report(
    gt: GroundTruth, dets: Detections, out_dir: str | Path, *,
    analysis: Analysis | None = None, title: str | None = None,
) -> dict[str, Any]:
    """Write the diagnosis of one set of results as figures, ``report.md`` and
    ``index.html`` (plus ``report.json``, the :func:`posefix.diagnosis.analyze` report, and
    ``figures.json``, the numbers drawn) into ``out_dir``.

    Args:
        gt: the ground truth.
        dets: the results.
        out_dir: the report folder (created; files of an earlier report are replaced).
        analysis: a :func:`posefix.diagnosis.run_analysis` of ``gt`` and ``dets``, if
            already computed.
        title: the page title (default: from the results' and ground truth's names).

    Returns:
        ``index``, ``markdown``, ``json``, ``figures_json`` (paths), ``figures`` (file name
        -> PNG path), ``drawn`` (figure name -> panel label -> the numbers drawn; the panel
        is labelled with the results file's stem, or ``"results"``) and ``analysis`` (the
        report dict).
    """
    a = analysis if analysis is not None else run_analysis(gt, dets)
    r = a.report
    name = Path(str(r.get("results", "results"))).name
    label = Path(name).stem  # names the panels; "results" when not from a file
    w = ReportFolder(out_dir)
    doc = Document(title or f"posefix analysis: {name}")
    where = f" against {r['gt']}" if "gt" in r else ""
    doc.para(f"Results {r.get('results', '(in memory)')}{where} (keypoint spec {r['spec']}): "
             f"{r['num_images']} images, {r['num_ground_truth']} persons counted, "
             f"{r['num_detections']} detections, {r['matched']} matched at OKS "
             f"{r['oks_threshold']:g}.")
    _ap_table(doc, [(label, a)])
    drawn = _figure_sections(doc, w, gt, [(label, a, dets)])
    doc.heading("AP if each error type were fixed")
    doc.para("COCO AP (OKS .50:.95) with the keypoints of one error type moved onto their "
             "ground truth, then cumulatively in coco-analyze's order; the last row removes "
             "the detections below OKS 0.1 with every person (posefix's background false "
             "positives).")
    _fix_table(doc, r)
    doc.links([("report.md", "report.md"), ("report.json (every number)", "report.json"),
               ("figures.json (the numbers drawn)", "figures.json")])
    paths = w.finish(doc, r, drawn)
    return {**paths, "figures": dict(w.figures), "drawn": drawn, "analysis": r}


# --------------------------------------------------------------------------- refinement
def _example_panels(gt: GroundTruth, before: Detections, after: Detections, image_id: int,
                    labels: tuple[str, str]) -> tuple[list[Any], int, int]:
    """Ground truth, before and after panels of one image, the after panel marking the
    moved keypoints and the before-rows it has no row for; (panels, moved, removed)."""
    from .comparison import align_rows, moved_keypoints
    from .visualize import Panel

    rb = np.flatnonzero(before.image_ids == image_id)
    ra = np.flatnonzero(after.image_ids == image_id)
    b_img, a_img = before.select(rb), after.select(ra)
    src = align_rows(b_img, a_img)
    origins = np.full(a_img.keypoints.shape[:2] + (2,), np.nan)
    aligned = src >= 0
    moved, _ = moved_keypoints(b_img.select(src[aligned]), a_img.select(np.flatnonzero(aligned)),
                               gt.spec.used_mask)
    origins[aligned] = np.where(moved[..., None], b_img.keypoints[src[aligned], :, :2], np.nan)
    removed = (np.setdiff1d(np.arange(len(rb)), src[aligned]) if aligned.all()
               else np.zeros(0, dtype=np.int64))
    panels = [Panel("ground truth", gt.keypoints[gt.indices_of_image(image_id)]),
              Panel(labels[0], b_img.keypoints, b_img.scores),
              Panel(labels[1], a_img.keypoints, a_img.scores, origins=origins,
                    removed=b_img.keypoints[removed])]
    return panels, int(moved.sum()), len(removed)


def _example_path(gt: GroundTruth, image_id: int,
                  images: Mapping[int, str | Path] | None) -> Path | None:
    """The image file of an example: from ``images``, else the ground truth's image root."""
    info = gt.images.get(image_id)
    if images is not None and image_id in images:
        return Path(images[image_id])
    if gt.image_root is not None and info is not None:
        return gt.image_root / info.file_name
    return None


def _pick_examples(gt: GroundTruth, b: Analysis, a: Analysis, num: int,
                   ) -> tuple[dict[str, list[dict[str, Any]]], np.ndarray, np.ndarray,
                              np.ndarray]:
    """The images whose persons' summed OKS rose most (``best``) and fell most
    (``worst``), at most ``num`` each, each ``{image_id, oks_change}``; and the persons'
    images, OKS before and after."""
    diagnoses = (b.diagnosis, a.diagnosis)
    persons, ob, oa = persons_oks_change(gt, diagnoses)
    img = gt.image_ids[persons]
    total = image_oks_change(gt, diagnoses)
    picks = {kind: [{"image_id": i, "oks_change": total[i]} for i in chosen]
             for kind, chosen in zip(("best", "worst"), extreme_images(total, num), strict=True)}
    return picks, img, ob, oa


def _examples(gt: GroundTruth, before: Detections, after: Detections,
              analyses: tuple[Analysis, Analysis], images: Mapping[int, str | Path] | None,
              num: int, exif: str, labels: tuple[str, str], w: ReportFolder, doc: Document,
              ) -> list[dict[str, Any]]:
    """Draw the images whose persons' OKS rose most and fell most."""
    from .images import load_image
    from .visualize import EXAMPLE_MAX_SIDE, EXAMPLE_MIN_SIDE, render_panels

    picks, img, ob, oa = _pick_examples(gt, *analyses, num)
    out = []
    for kind in ("best", "worst"):
        verb, base = ("rose", "rise") if kind == "best" else ("fell", "fall")
        doc.heading(f"Images whose OKS {verb} most")
        if not picks[kind]:
            doc.para(f"No image: on no image did the summed OKS of its persons {base} by "
                     f"{MIN_CHANGE:g} or more.")
        for rank, pick in enumerate(picks[kind], 1):
            image_id, change = pick["image_id"], pick["oks_change"]
            sel = (img == image_id) & (np.abs(oa - ob) >= MIN_CHANGE)
            info = gt.images.get(image_id)
            name = info.file_name if info is not None else str(image_id)
            entry = {"kind": kind, "image_id": image_id, "file_name": name,
                     "oks_change": change, "oks_before": ob[sel], "oks_after": oa[sel]}
            panels, moved, removed = _example_panels(gt, before, after, image_id, labels)
            entry.update(keypoints_moved=moved, detections_removed=removed)
            caption = _example_caption(name, change, ob[sel], oa[sel], moved, removed, labels)
            path = _example_path(gt, image_id, images)
            try:
                if path is None:
                    raise FileNotFoundError(name)
                size = (info.width, info.height) if info is not None else None
                picture = load_image(path, exif, size)
            except (OSError, ValueError) as err:  # InputError is a ValueError
                doc.para(f"{caption} (image not drawn: {err})")
                entry["drawn"] = False
                out.append(entry)
                continue
            canvas = render_panels(picture, panels, gt.spec, max_side=EXAMPLE_MAX_SIDE,
                                   min_side=EXAMPLE_MIN_SIDE)
            entry["png"] = w.png(f"examples/{kind}_{rank}.png", canvas)
            entry["drawn"] = True
            doc.image(entry["png"], f"{kind} {rank}: {name}", caption)
            out.append(entry)
    return out


def _example_caption(name: str, change: float, ob: np.ndarray, oa: np.ndarray, moved: int,
                     removed: int, labels: tuple[str, str]) -> str:
    """An example picture's caption: the OKS changes, what moved, what the panels show."""
    changes = ", ".join(f"{x:.3f} → {y:.3f}" for x, y in zip(ob, oa, strict=True))
    return (f"{name}: summed OKS change {change:+.3f} (the persons whose OKS "
            f"changed, {labels[0]} → {labels[1]}: {changes}); {moved} keypoint(s) "
            f"moved, {removed} detection(s) removed. Panels: ground truth, "
            f"{labels[0]}, {labels[1]} (a magenta line from each moved keypoint's "
            f"{labels[0]} position; removed detections grey); left side blue, "
            "right orange.")


def write_refine_report(
    gt: GroundTruth, before: Detections, after: Detections, out_dir: str | Path, *,
    images: Mapping[int, str | Path] | None = None,
    summary: Mapping[str, Any] | None = None,
    diagnoses: tuple[Diagnosis, Diagnosis] | None = None,
    num_examples: int = 3, exif: str = "auto",
    labels: tuple[str, str] = ("input", "refined"),
) -> dict[str, Any]:
    """Write the diagnosis of results before and after refinement, side by side, with what
    refinement did to each keypoint's error type and the images whose OKS changed most.

    Args:
        gt: the ground truth.
        before, after: the input and the refined results.
        out_dir: the report folder (created; files of an earlier report are replaced).
        images: image id -> image file for the example pictures (default: the ground
            truth's image root; without images the examples are listed, not drawn).
        summary: :func:`posefix.commands.refine.refine_files`' summary (its ``ap_before``,
            ``ap_after`` and ``error_changes``); computed here when None.
        diagnoses: the two sets' :func:`posefix.diagnosis.classify_keypoints`, where the
            caller has them (as :func:`posefix.comparison.compare_results` took them).
        num_examples: images to draw whose OKS rose most, and as many where it fell most.
        exif: EXIF orientation handling of the images (see :func:`posefix.images.load_image`).
        labels: the names of the two sets of results.

    Returns:
        As :func:`write_analysis_report`, with ``analysis`` holding ``before``, ``after``
        and ``comparison`` (the summary's numbers drawn).
    """
    if summary is None or "error_changes" not in summary:
        from .comparison import compare_results

        summary = compare_results(gt, before, after, diagnoses)
    comparison = {k: summary[k] for k in ("ap_before", "ap_after", "errors_before",
                                         "errors_after", "matched_before", "matched_after",
                                         "mean_oks_before", "mean_oks_after", "mean_oks_both",
                                         "error_changes")}
    db, da = diagnoses if diagnoses is not None else (None, None)
    b, a = run_analysis(gt, before, diagnosis=db), run_analysis(gt, after, diagnosis=da)
    w = ReportFolder(out_dir)
    doc = Document(f"posefix refine: {Path(str(summary.get('results', labels[0]))).name} → "
               f"{Path(str(summary.get('out', labels[1]))).name}")
    _refine_intro(doc, b.report, summary, comparison, labels)
    drawn = _figure_sections(doc, w, gt, [(labels[0], b, before), (labels[1], a, after)])
    drawn["transitions"] = _transition_section(doc, w, gt, comparison["error_changes"],
                                               labels)
    drawn["examples"] = _examples(gt, before, after, (b, a), images, num_examples, exif,
                                  labels, w, doc)
    doc.heading("AP if each error type were fixed")
    for label, an in ((labels[0], b), (labels[1], a)):
        doc.para(f"{label}:")
        _fix_table(doc, an.report)
    doc.links([("report.md", "report.md"), ("report.json (every number)", "report.json"),
               ("figures.json (the numbers drawn)", "figures.json")])
    report = {labels[0]: b.report, labels[1]: a.report, "comparison": comparison}
    paths = w.finish(doc, report, drawn)
    return {**paths, "figures": dict(w.figures), "drawn": drawn, "analysis": report}


def _refine_intro(doc: Document, r: Mapping[str, Any], summary: Mapping[str, Any],
                  comparison: Mapping[str, Any], labels: tuple[str, str]) -> None:
    """The refine report's first paragraph and its AP table, before and after."""
    files = (f" ({summary['results']} and {summary['out']})"
             if "results" in summary and "out" in summary else "")
    doc.para(f"The {labels[0]} and the {labels[1]} results{files} against the ground truth "
             f"(keypoint spec {r['spec']}, {r['num_images']} images, {r['num_ground_truth']} "
             "persons counted). Every figure shows the two side by side.")
    keys = ("AP", "AP50", "AP75", "APm", "APl", "AR")
    ab, aa = comparison["ap_before"], comparison["ap_after"]
    both = comparison["mean_oks_both"]
    doc.table(["", *keys, "mean OKS (matched)", "mean OKS (matched in both)"], [
        [labels[0], *(fmt_number(ab[k]) for k in keys), fmt_number(comparison["mean_oks_before"]),
         fmt_number(both[0])],
        [labels[1], *(fmt_number(aa[k]) for k in keys), fmt_number(comparison["mean_oks_after"]),
         fmt_number(both[1])],
        ["change", *(f"{aa[k] - ab[k]:+.3f}" if min(aa[k], ab[k]) >= 0 else "n/a"
                     for k in keys),
         f"{comparison['mean_oks_after'] - comparison['mean_oks_before']:+.3f}",
         f"{both[1] - both[0]:+.3f}"],
    ])


def _transition_section(doc: Document, w: ReportFolder, gt: GroundTruth, ch: Mapping[str, Any],
                        labels: tuple[str, str]) -> dict[str, Any]:
    """What refinement did to each keypoint: the transitions figure, its sentences and
    tables; returns the numbers drawn."""
    doc.heading("What refinement did to each keypoint")
    fig, drawn = transition_figure(ch, gt.spec.keypoints, labels)
    fixed, made = drawn["fixed"], drawn["made"]
    changed = [k for k in gt.spec.keypoints
               if any(fixed[k].values()) or any(made[k].values())]
    matrix = np.asarray(ch["transitions"], dtype=np.int64)
    caption = (f"Keypoints of the persons matched {labels[0]} and {labels[1]} by error type "
               f"{labels[0]} (rows) and {labels[1]} (columns)")
    if changed:
        caption += (". Right: per keypoint, the errors refinement fixed (to good, right) and "
                    "the good keypoints it made into errors (left, hatched), coloured by the "
                    "error type.")
    else:
        caption += "."
    doc.image(w.figure("transitions.png", fig), "error type transitions", caption)
    if not ch["persons_compared"]:
        doc.para(f"No person was matched both {labels[0]} and {labels[1]}: there is no "
                 "keypoint to compare.")
    elif not changed:
        off = int(matrix.sum() - np.trace(matrix))
        doc.para(f"Refinement fixed no keypoint error and made none: of the "
                 f"{int(matrix.sum())} labelled keypoints of the {ch['persons_compared']} "
                 f"persons matched in both, {off} changed from one error type to another and "
                 "none to or from good, so there is no per-keypoint panel or table.")
    types = ch["types"]
    doc.table([f"{labels[0]} \\ {labels[1]}", *types],
              [[t, *row] for t, row in zip(types, ch["transitions"], strict=True)])
    if changed:
        bad = [t for t in types if t != "good"]
        doc.para(f"Per keypoint (the {len(changed)} of {len(gt.spec.keypoints)} keypoints "
                 "with an error fixed or made):")
        doc.table(["keypoint", *(f"{t} → good" for t in bad), *(f"good → {t}" for t in bad)],
                  [[k, *(fixed[k][t] for t in bad), *(made[k][t] for t in bad)]
                   for k in changed])
    return drawn
