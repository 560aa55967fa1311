"""The figures of a report (matplotlib), drawn from the :class:`posefix.diagnosis.Analysis`
objects they are given: coco-analyze's precision-recall breakdown, error types, OKS
histogram, person sizes, labelled keypoints, and a refinement's error type transitions.
Each returns the figure and the numbers it drew."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .diagnosis import PR_STEP_LABELS, PR_STEPS, PR_THRESHOLDS, Analysis
from .evaluate import RECALL_THRESHOLDS, detection_areas
from .io import Detections, GroundTruth
from .taxonomy import ERROR_TYPES

__all__ = ["PALETTE", "SIZE_EDGES", "Column", "error_type_figure", "fmt_number", "ink",
           "labelled_figure", "oks_figure", "pr_figure", "size_figure", "transition_figure"]

#: One colour per error type and outcome, the same in every figure.
PALETTE: dict[str, str] = {
    "original": "#c6d4e1",  # area under the curve of the results as they are
    "good": "#6aaa64",
    "jitter": "#f2c14e",
    "inversion": "#f08a4b",
    "swap": "#d1495b",
    "miss": "#7b4b94",
    "background_fp": "#3d7dca",
    "duplicate": "#9cc3ea",
    "false_negatives": "#2a9d8f",
    "matched": "#a9a9a9",
}
#: Person size bins: edges of sqrt(area) in pixels.
SIZE_EDGES: tuple[float, ...] = (0, 32, 64, 96, 128, 192, np.inf)
_OKS_BINS = np.linspace(0.1, 1.0, 19)

# --------------------------------------------------------------------------- figures
#: A report's column: its label and the analysis drawn.
Column = tuple[str, Analysis]


def ink(color: str, most: float = 0.30) -> tuple[float, float, float]:
    """``color`` darkened until its relative luminance is at most ``most``: the same hue,
    readable as text on white (the jitter yellow is not)."""
    rgb = np.asarray(to_rgb(color))
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    lum = float(lin @ np.array([0.2126, 0.7152, 0.0722]))
    if lum <= most:
        return (float(rgb[0]), float(rgb[1]), float(rgb[2]))
    lin = lin * most / lum
    out = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return (float(out[0]), float(out[1]), float(out[2]))


def _integer_axis(axis: Any, absolute: bool = False) -> None:
    """Counts: integer ticks only (no 0.25 detections); ``absolute`` labels -3 as 3."""
    axis.set_major_locator(MaxNLocator(integer=True))
    if absolute:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(round(v))}"))


def _empty(ax: Any, text: str) -> None:
    """Say in an axes why it has nothing drawn."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color="#555", wrap=True)


def _area(curve: np.ndarray) -> float:
    """The area under a drawn precision curve: its mean over the recall points (-1: none)."""
    defined = curve[curve > -1]
    return float(np.mean(defined)) if len(defined) else -1.0


def fmt_number(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.3f}"


def pr_figure(columns: Sequence[Column], oks: float) -> tuple[Figure, dict[str, Any]]:
    """Stacked precision-recall curves at one OKS threshold, one panel per column."""
    fig = Figure(figsize=(8.2 * len(columns), 4.8), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    drawn: dict[str, Any] = {}
    rec = RECALL_THRESHOLDS
    for ax, (label, analysis) in zip(axes, columns, strict=True):
        prev = np.zeros_like(rec)
        handles, areas, legend = [], {}, []
        for step in PR_STEPS:
            curve = analysis.curves[step].curve(oks)
            areas[step] = _area(curve)
            y = np.clip(curve, 0, 1)
            color = PALETTE[step if step in PALETTE else "original"]
            if areas[step] >= 0:
                ax.fill_between(rec, prev, y, where=y >= prev, interpolate=True, color=color,
                                linewidth=0)
                ax.plot(rec, y, color="black", linewidth=0.8)
                prev = np.maximum(prev, y)
            text = f"[{fmt_number(areas[step])}] {PR_STEP_LABELS[step]}"
            legend.append(text)
            handles.append(Patch(facecolor=color, edgecolor="black", linewidth=0.6, label=text))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.set_title(f"{label}: precision-recall at OKS {oks:.2f}")
        if not analysis.report["num_detections"]:
            _empty(ax, "no detections: no curve")
        ax.legend(handles=handles[::-1], loc="upper left", bbox_to_anchor=(1.02, 1),
                  fontsize=9, title=f"[AP at OKS {oks:.2f}: area under the curve]",
                  title_fontsize=9,
                  alignment="left", frameon=False)
        drawn[label] = {"ap": areas, "legend": legend}
    return fig, drawn


def _share_rows(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any] | None]]:
    rows: list[tuple[str, Mapping[str, Any] | None]] = [("all keypoints", report["keypoints"])]
    rows += [(f"group: {g}", b) for g, b in report["per_group"].items()]
    rows.append(("per keypoint:", None))
    rows += list(report["per_keypoint"].items())
    return rows


def error_type_figure(columns: Sequence[Column]) -> tuple[Figure, dict[str, Any]]:
    """Stacked horizontal bars: the share of each error type per keypoint and group."""
    rows = _share_rows(columns[0][1].report)
    fig = Figure(figsize=(5.6 * len(columns) + 1.6, 0.3 * len(rows) + 2.2), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False, sharey=True)[0]
    y = np.arange(len(rows))
    drawn: dict[str, Any] = {}
    for ax, (label, analysis) in zip(axes, columns, strict=True):
        shares: dict[str, dict[str, float]] = {}
        left = np.zeros(len(rows))
        for t in ERROR_TYPES:
            width = np.array([100 * b["rates"][t] if b else 0.0
                              for _, b in _share_rows(analysis.report)])
            ax.barh(y, width, left=left, color=PALETTE[t], edgecolor="white", linewidth=0.5,
                    label=t, height=0.8)
            left += width
            for (name, b), w in zip(_share_rows(analysis.report), width, strict=True):
                if b is not None:
                    shares.setdefault(name, {})[t] = float(w)
        if not analysis.report["keypoints"]["labelled"]:
            _empty(ax, "no detection matched a person:\nno keypoint to classify")
        for yi, (_, b) in zip(y, _share_rows(analysis.report), strict=True):
            if b is not None:
                text = f"n={b['labelled']}" if b["labelled"] else "not labelled"
                ax.text(101, yi, text, va="center", fontsize=7, color="#444")
        ax.set_xlim(0, 116)
        ax.set_xticks([0, 20, 40, 60, 80, 100])
        ax.set_xlabel("% of the labelled keypoints of matched detections")
        ax.set_title(f"{label}: keypoint error types")
        ax.grid(axis="x", alpha=0.3)
        drawn[label] = shares
    axes[0].set_yticks(y, [name for name, _ in rows])
    axes[0].invert_yaxis()
    fig.legend(handles=[Patch(color=PALETTE[t], label=t) for t in ERROR_TYPES],
               loc="outside upper center", ncol=len(ERROR_TYPES), frameon=False)
    return fig, drawn


def oks_figure(columns: Sequence[Column]) -> tuple[Figure, dict[str, Any]]:
    """Histogram of the OKS of matched detections, one panel per column."""
    fig = Figure(figsize=(5.6 * len(columns), 4.2), layout="constrained")
    axes = fig.subplots(1, len(columns), squeeze=False, sharey=True)[0]
    drawn: dict[str, Any] = {}
    top = max(1, *(int(np.histogram(np.asarray(a.diagnosis.oks, dtype=float), bins=_OKS_BINS)[0]
                       .max(initial=0)) for _, a in columns))  # the panels share their y axis
    for ax, (label, analysis) in zip(axes, columns, strict=True):
        oks = np.asarray(analysis.diagnosis.oks, dtype=float)
        counts, _ = np.histogram(oks, bins=_OKS_BINS)
        ax.bar(_OKS_BINS[:-1], counts, width=np.diff(_OKS_BINS), align="edge",
               color=PALETTE["matched"], edgecolor="white")
        for thr in PR_THRESHOLDS:
            ax.axvline(thr, color="black", linestyle="--", linewidth=1)
            ax.text(thr, 1.0, f" OKS {thr:.2f}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8)
        mean = float(np.mean(oks)) if len(oks) else float("nan")
        ax.set_xlim(0.1, 1.0)
        ax.set_ylim(0, top * 1.08)
        _integer_axis(ax.yaxis)
        if not len(oks):
            _empty(ax, "no detection matched a person")
        ax.set_xlabel("OKS with the matched person")
        ax.set_ylabel("matched detections")
        ax.set_title(f"{label}: OKS of the {len(oks)} matched detections\n"
                     f"(matched at OKS {analysis.diagnosis.oks_threshold:g}; mean "
                     f"{mean:.3f})" if len(oks) else
                     f"{label}: no detection matched a person", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        drawn[label] = {"bin_edges": _OKS_BINS, "counts": counts, "n": int(len(oks)),
                        "mean": mean}
    return fig, drawn


def _size_labels() -> list[str]:
    e = SIZE_EDGES
    return ([f"<{e[1]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(e[1:-2], e[2:-1], strict=True)]
            + [f"≥{e[-2]:g}"])


def _size_counts(gt: GroundTruth, dets: Detections, analysis: Analysis) -> dict[str, Any]:
    d = analysis.diagnosis
    bins = np.asarray(SIZE_EDGES)

    def hist(area: np.ndarray) -> np.ndarray:
        side = np.sqrt(np.maximum(np.asarray(area, dtype=float), 0))
        return np.histogram(side, bins=bins)[0]

    counted = np.flatnonzero(gt.counted)
    missed = np.asarray(d.missed_gt_index, dtype=np.int64)
    found = np.setdiff1d(counted, missed)
    background = np.asarray(d.background_det_index, dtype=np.int64)
    duplicates = np.setdiff1d(np.asarray(d.unmatched_det_index, dtype=np.int64), background)
    return {
        "bins": _size_labels(),
        "persons_found": hist(gt.areas[found]),
        "persons_missed": hist(gt.areas[missed]),
        "detections_matched": hist(detection_areas(dets, np.asarray(d.det_index))),
        "duplicates": hist(detection_areas(dets, duplicates)),
        "background_fp": hist(detection_areas(dets, background)),
    }


def _stacked(ax: Any, labels: list[str], parts: list[tuple[str, np.ndarray, str]]) -> None:
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for name, values, color in parts:
        ax.bar(x, values, bottom=bottom, color=color, label=f"{name} ({int(values.sum())})",
               edgecolor="white", linewidth=0.5)
        bottom += values
    ax.set_xticks(x, labels)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(1.0, bottom.max()) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)


def size_figure(columns: Sequence[tuple[str, Analysis, Detections]], gt: GroundTruth,
              ) -> tuple[Figure, dict[str, Any]]:
    """Per column: persons found / missed, detections by outcome, AP per area range."""
    fig = Figure(figsize=(15, 3.9 * len(columns)), layout="constrained")
    axes = fig.subplots(len(columns), 3, squeeze=False)
    drawn: dict[str, Any] = {}
    for (ax_p, ax_d, ax_a), (label, analysis, dets) in zip(axes, columns, strict=True):
        c = _size_counts(gt, dets, analysis)
        _stacked(ax_p, c["bins"], [("found", c["persons_found"], PALETTE["matched"]),
                                   ("missed", c["persons_missed"], PALETTE["false_negatives"])])
        ax_p.set_title(f"{label}: ground-truth persons by size")
        ax_p.set_xlabel("person size: √area (px)")
        ax_p.set_ylabel("persons")
        _stacked(ax_d, c["bins"], [
            ("matched", c["detections_matched"], PALETTE["matched"]),
            ("duplicate", c["duplicates"], PALETTE["duplicate"]),
            ("background FP", c["background_fp"], PALETTE["background_fp"])])
        ax_d.set_title(f"{label}: detections by size")
        ax_d.set_xlabel("detection size: √area (px)")
        ax_d.set_ylabel("detections")
        ap = analysis.report["ap"]
        names = ["all", "medium\n32²-96²", "large\n>96²"]
        values = [ap["AP"], ap["APm"], ap["APl"]]
        bars = ax_a.bar(np.arange(3), [max(v, 0) for v in values], color=PALETTE["original"],
                        edgecolor="black", linewidth=0.6)
        for b, v in zip(bars, values, strict=True):
            ax_a.text(b.get_x() + b.get_width() / 2, max(v, 0) + 0.02, fmt_number(v), ha="center",
                      fontsize=9)
        ax_a.set_xticks(np.arange(3), names)
        ax_a.set_ylim(0, 1.1)
        ax_a.set_ylabel("AP (OKS .50:.95)")
        ax_a.set_xlabel("COCO area range (n/a: no person in it)")
        ax_a.set_title(f"{label}: AP by person size")
        ax_a.grid(axis="y", alpha=0.3)
        drawn[label] = {**c, "ap_by_area": dict(zip(("all", "medium", "large"), values,
                                                    strict=True))}
    return fig, drawn


def _labelled_bins(most: int) -> list[tuple[int, int]]:
    """Up to four ranges of labelled-keypoint counts covering ``1 .. most``."""
    edges = np.unique(np.round(np.linspace(0, max(most, 1), 5)).astype(int))
    return [(int(a) + 1, int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _labelled_counts(gt: GroundTruth, analysis: Analysis) -> dict[str, Any]:
    """Persons found and missed, mean OKS and keypoint error shares by how many keypoints
    the person has labelled (coco-analyze's sensitivity to the number of keypoints)."""
    d = analysis.diagnosis
    n = gt.num_labelled
    counted = np.flatnonzero(gt.counted)
    missed = np.asarray(d.missed_gt_index, dtype=np.int64)
    bins = _labelled_bins(int(n[counted].max()) if len(counted) else 1)
    matched_n = n[np.asarray(d.gt_index, dtype=np.int64)]
    out: dict[str, Any] = {"bins": [f"{a}-{b}" if a < b else f"{a}" for a, b in bins],
                           "persons_found": [], "persons_missed": [], "mean_oks": [],
                           "shares": {t: [] for t in ERROR_TYPES}}
    for a, b in bins:
        in_bin = (n[counted] >= a) & (n[counted] <= b)
        n_missed = int(np.isin(counted[in_bin], missed).sum())
        out["persons_missed"].append(n_missed)
        out["persons_found"].append(int(in_bin.sum()) - n_missed)
        rows = (matched_n >= a) & (matched_n <= b)
        out["mean_oks"].append(float(d.oks[rows].mean()) if rows.any() else -1.0)
        labels = d.labels[rows]
        total = max(int((labels >= 0).sum()), 1)
        for code, t in enumerate(ERROR_TYPES):
            out["shares"][t].append(100.0 * int((labels == code).sum()) / total)
    return out


def labelled_figure(columns: Sequence[tuple[str, Analysis, Detections]], gt: GroundTruth,
                  ) -> tuple[Figure, dict[str, Any]]:
    """Per column: persons found / missed with the mean OKS of the found, and the error
    shares of their keypoints, by the number of keypoints the person has labelled."""
    fig = Figure(figsize=(11, 3.9 * len(columns)), layout="constrained")
    axes = fig.subplots(len(columns), 2, squeeze=False)
    drawn: dict[str, Any] = {}
    for (ax_p, ax_e), (label, analysis, _) in zip(axes, columns, strict=True):
        c = _labelled_counts(gt, analysis)
        _stacked(ax_p, c["bins"], [
            ("found", np.asarray(c["persons_found"]), PALETTE["matched"]),
            ("missed", np.asarray(c["persons_missed"]), PALETTE["false_negatives"])])
        top = ax_p.get_ylim()[1]
        for x, (f, m, o) in enumerate(zip(c["persons_found"], c["persons_missed"],
                                          c["mean_oks"], strict=True)):
            ax_p.text(x, f + m + 0.02 * top, f"OKS {fmt_number(o)}", ha="center", fontsize=8)
        ax_p.set_title(f"{label}: persons, and the mean OKS of those found")
        ax_p.set_xlabel("labelled keypoints of the person")
        ax_p.set_ylabel("persons")
        x = np.arange(len(c["bins"]))
        bottom = np.zeros(len(x))
        for t in ERROR_TYPES:
            v = np.asarray(c["shares"][t])
            ax_e.bar(x, v, bottom=bottom, color=PALETTE[t], label=t, edgecolor="white",
                     linewidth=0.5)
            bottom += v
        ax_e.set_xticks(x, c["bins"])
        ax_e.set_ylim(0, 100)
        if not len(analysis.diagnosis.gt_index):
            _empty(ax_e, "no detection matched a person")
        ax_e.set_xlabel("labelled keypoints of the person")
        ax_e.set_ylabel("% of their keypoints")
        ax_e.set_title(f"{label}: keypoint error types")
        ax_e.legend(handles=[Patch(color=PALETTE[t], label=t) for t in ERROR_TYPES],
                    fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
        drawn[label] = c
    return fig, drawn


def _fixed_made(changes: Mapping[str, Any], spec_keypoints: Sequence[str],
                ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Per keypoint and error type: errors fixed (type -> good), good made into errors."""
    types = list(changes["types"])
    good = types.index("good")
    per_kp = {k: np.asarray(v, dtype=np.int64) for k, v in changes["per_keypoint"].items()}
    fixed = {k: {t: int(per_kp[k][c, good]) for c, t in enumerate(types) if c != good}
             for k in spec_keypoints}
    made = {k: {t: int(per_kp[k][good, c]) for c, t in enumerate(types) if c != good}
            for k in spec_keypoints}
    return fixed, made


def _draw_matrix(ax_m: Any, changes: Mapping[str, Any], labels: tuple[str, str]) -> np.ndarray:
    types = list(changes["types"])
    matrix = np.asarray(changes["transitions"], dtype=np.int64)
    ax_m.imshow(np.log1p(matrix), cmap="Blues")
    for i in range(len(types)):
        for j in range(len(types)):
            dark = matrix[i, j] > 0 and np.log1p(matrix[i, j]) > 0.6 * np.log1p(matrix.max())
            ax_m.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=10,
                      color="white" if dark else "black")
    ax_m.set_xticks(range(len(types)), types)
    ax_m.set_yticks(range(len(types)), types)
    for tick, t in zip(ax_m.get_yticklabels(), types, strict=True):
        tick.set_color(ink(PALETTE[t]))
    for tick, t in zip(ax_m.get_xticklabels(), types, strict=True):
        tick.set_color(ink(PALETTE[t]))
    ax_m.set_xlabel(f"type {labels[1]} (after)")
    ax_m.set_ylabel(f"type {labels[0]} (before)")
    ax_m.set_title(f"keypoints by error type, {labels[0]} → {labels[1]}\n"
                   f"({changes['persons_compared']} persons matched in both; "
                   "diagonal: unchanged)", fontsize=10)
    return matrix


def transition_figure(changes: Mapping[str, Any], spec_keypoints: Sequence[str],
                     labels: tuple[str, str]) -> tuple[Figure, dict[str, Any]]:
    """The from-type -> to-type matrix, and per keypoint the errors fixed and made (that
    panel left out where refinement fixed and made none)."""
    types = list(changes["types"])
    fixed, made = _fixed_made(changes, spec_keypoints)
    any_change = any(v for d in (fixed, made) for kp in d.values() for v in kp.values())
    if not any_change:
        fig = Figure(figsize=(6, 4.8), layout="constrained")
        matrix = _draw_matrix(fig.subplots(), changes, labels)
        return fig, {"types": types, "matrix": matrix, "fixed": fixed, "made": made}
    fig = Figure(figsize=(14, max(4.8, 0.32 * len(spec_keypoints) + 2)), layout="constrained")
    ax_m, ax_k = fig.subplots(1, 2, width_ratios=[1, 1.5])
    matrix = _draw_matrix(ax_m, changes, labels)
    y = np.arange(len(spec_keypoints))
    right = np.zeros(len(y))
    left = np.zeros(len(y))
    for t in types:
        if t == "good":
            continue
        f = np.array([fixed[k][t] for k in spec_keypoints], dtype=float)
        m = np.array([made[k][t] for k in spec_keypoints], dtype=float)
        ax_k.barh(y, f, left=right, color=PALETTE[t], edgecolor="white", linewidth=0.5)
        ax_k.barh(y, -m, left=-left, color=PALETTE[t], edgecolor="white", linewidth=0.5,
                  hatch="//")
        right += f
        left += m
    lim = max(1.0, right.max(initial=0), left.max(initial=0)) * 1.1
    ax_k.set_xlim(-lim, lim)
    _integer_axis(ax_k.xaxis, absolute=True)
    ax_k.axvline(0, color="black", linewidth=0.8)
    ax_k.set_yticks(y, list(spec_keypoints))
    ax_k.invert_yaxis()
    ax_k.set_xlabel("keypoints:  ← good made into an error (hatched)  |  error fixed to good →")
    ax_k.set_title("per keypoint: errors fixed and made, coloured by error type", fontsize=10)
    ax_k.grid(axis="x", alpha=0.3)
    ax_k.legend(handles=[Patch(color=PALETTE[t], label=t) for t in types if t != "good"],
                fontsize=8, loc="lower right")
    drawn = {"types": types, "matrix": matrix, "fixed": fixed, "made": made}
    return fig, drawn
