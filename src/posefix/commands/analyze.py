"""``posefix analyze``: a results file's error diagnosis, its report and an error profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..diagnosis import classify_keypoints, run_analysis
from ..options import AnalyzeOptions, with_overrides
from ..outputs import check_outputs, folder_inputs
from ..profile import fit_profile, save_profile
from .evaluate import load_evaluation_inputs

__all__ = ["analyze_files"]


def analyze_files(
    gt_path: str | Path, results_path: str | Path, options: AnalyzeOptions | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """:func:`posefix.diagnosis.analyze` a results file against an annotation file (only
    its images of ``options.split``, if given); optionally fit an error profile
    (:func:`posefix.profile.fit_profile`) and write it to ``options.fit_profile_out``, and
    write the figures, ``report.md`` and ``index.html`` into ``options.report_dir``
    (:func:`posefix.report.write_analysis_report`; its path is then ``report["report"]``).
    ``results_path`` in any format of :mod:`posefix.formats` (``options.format`` None:
    detected). The outputs are checked first (:func:`posefix.outputs.check_outputs`: never
    over an input). ``options``: :class:`posefix.options.AnalyzeOptions`; ``overrides``:
    its fields as keywords (``report_dir="analysis/"``), the older call form."""
    options = with_overrides(AnalyzeOptions, options, overrides)
    fit_profile_out, report_dir = options.fit_profile_out, options.report_dir
    check_outputs({"--fit-profile": fit_profile_out}, {"--report": report_dir},
                  inputs={"gt": gt_path, "results": folder_inputs(results_path),
                          "spec": _file(options.spec)})
    gt, dets, n_unknown = load_evaluation_inputs(gt_path, results_path, options)
    d = classify_keypoints(gt, dets)
    analysis = run_analysis(gt, dets, diagnosis=d)
    report = analysis.report
    report.update({"gt": str(gt_path), "results": str(results_path),
                   "skipped_unknown_image": n_unknown})
    if report_dir is not None:
        from ..report import write_analysis_report  # matplotlib: only for a report

        written = write_analysis_report(gt, dets, report_dir, analysis=analysis)
        report["report"] = str(written["index"])
    if fit_profile_out is not None:
        profile = fit_profile(d.labels, d.num_labelled, d.num_overlap, gt.spec,
                              swap_possible=d.swap_possible)
        report["profile"] = str(save_profile(profile, fit_profile_out))
    return report


def _file(name: object) -> Path | None:
    """A spec or profile given as a file (an input), else None (a built-in name)."""
    return Path(name) if isinstance(name, (str, Path)) and Path(name).is_file() else None
