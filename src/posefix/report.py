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

Every figure uses the colours of :data:`PALETTE`, one per error type. Each writer returns
the paths it wrote and the numbers it drew (``drawn``, also in ``figures.json``), so tests
can hold them against ``--json``. Files are written atomically and ``index.html`` last: a
folder without it is not a finished report (a rerun first removes the old one).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .diagnosis import (
    PR_STEP_LABELS,
    PR_STEPS,
    PR_THRESHOLDS,
    Analysis,
    Diagnosis,
    run_analysis,
)
from .evaluate import RECALL_THRESHOLDS, _detection_areas
from .io import Detections, GroundTruth, atomic_write
from .taxonomy import ERROR_TYPES

__all__ = ["PALETTE", "SIZE_EDGES", "ink", "write_analysis_report", "write_refine_report"]

#: Example pictures: each panel's longer side, small images enlarged so a change shows.
_EXAMPLE_MIN_SIDE = 480
_EXAMPLE_MAX_SIDE = 560

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
_DPI = 100
_COMPLETE_MARKERS = ("index.html", "report.md", "report.json", "figures.json")


# --------------------------------------------------------------------------- documents
@dataclass
class _Doc:
    """A tiny document model rendered both to Markdown and to static HTML."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def image(self, path: str, alt: str, caption: str) -> None:
        self.blocks.append(("img", (path, alt, caption)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def links(self, items: Sequence[tuple[str, str]]) -> None:
        self.blocks.append(("links", list(items)))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, b in self.blocks:
            if kind == "h2":
                out += [f"## {b}", ""]
            elif kind == "p":
                out += [b, ""]
            elif kind == "img":
                path, alt, caption = b
                out += [f"![{alt}]({path})", "", f"*{caption}*", ""]
            elif kind == "table":
                header, rows = b
                cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
                out.append("| " + " | ".join(cell(h) for h in header) + " |")
                out.append("| " + " | ".join("---" for _ in header) + " |")
                out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
                out.append("")
            elif kind == "links":
                out += [" · ".join(f"[{text}]({href})" for text, href in b), ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
               f"<title>{e(self.title)}</title>", f"<style>{_CSS}</style>", "</head>",
               "<body>", f"<h1>{e(self.title)}</h1>"]
        for kind, b in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{e(b)}</h2>")
            elif kind == "p":
                out.append(f"<p>{e(b)}</p>")
            elif kind == "img":
                path, alt, caption = b
                out.append(f'<figure><a href="{e(path)}"><img src="{e(path)}" alt="{e(alt)}">'
                           f"</a><figcaption>{e(caption)}</figcaption></figure>")
            elif kind == "table":
                header, rows = b
                out.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>"
                                                          for h in header) + "</tr></thead>")
                out.append("<tbody>" + "".join(
                    "<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                    for r in rows) + "</tbody></table>")
            elif kind == "links":
                out.append("<p>" + " · ".join(f'<a href="{e(href)}">{e(text)}</a>'
                                              for text, href in b) + "</p>")
        out += ["</body>", "</html>", ""]
        return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;"
        "color:#222}h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ddd}"
        "figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}"
        "figcaption{color:#555;font-size:.9em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}")


# --------------------------------------------------------------------------- files
class _Writer:
    """Writes a report folder: old completion markers removed first, index.html last."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir)
        if self.root.exists() and not self.root.is_dir():
            raise FileExistsError(f"{self.root}: exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        for name in _COMPLETE_MARKERS:
            (self.root / name).unlink(missing_ok=True)
        for old in (*self.root.glob("examples/best_*.png"),
                    *self.root.glob("examples/worst_*.png")):
            old.unlink()  # an earlier report's example pictures
        self.figures: dict[str, Path] = {}

    def figure(self, name: str, fig: Figure) -> str:
        """Save a figure as ``name`` (relative to the folder) and return ``name``."""
        path = self.root / name
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=_DPI,
                                                 metadata={"Software": None}), binary=True)
        _readable(path)
        self.figures[name] = path
        return name

    def png(self, name: str, image: np.ndarray) -> str:
        from PIL import Image

        def write(f: Any) -> None:
            Image.fromarray(image).save(f, format="PNG")

        path = _readable(atomic_write(self.root / name, write, binary=True))
        self.figures[name] = path
        return name

    def finish(self, doc: _Doc, report: Any, drawn: Any) -> dict[str, Path]:
        paths = {
            "json": atomic_write(self.root / "report.json",
                                 lambda f: json.dump(_plain(report), f, indent=1)),
            "figures_json": atomic_write(self.root / "figures.json",
                                         lambda f: json.dump(_plain(drawn), f, indent=1)),
            "markdown": atomic_write(self.root / "report.md", lambda f: f.write(doc.markdown())),
        }
        paths["index"] = atomic_write(self.root / "index.html", lambda f: f.write(doc.html()))
        for p in paths.values():
            _readable(p)
        return paths


def _readable(path: Path) -> Path:
    """Give a written file the permissions of a newly created one (the temporary files of
    :func:`posefix.io.atomic_write` are private), so a report can be shared or served."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return path


def _plain(obj: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays to Python, NaN to None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- figures
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


def _fmt(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.3f}"


def _fig_pr(columns: Sequence[Column], oks: float) -> tuple[Figure, dict[str, Any]]:
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
            text = f"[{_fmt(areas[step])}] {PR_STEP_LABELS[step]}"
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


def _fig_error_types(columns: Sequence[Column]) -> tuple[Figure, dict[str, Any]]:
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


def _fig_oks(columns: Sequence[Column]) -> tuple[Figure, dict[str, Any]]:
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
        "detections_matched": hist(_detection_areas(dets, np.asarray(d.det_index))),
        "duplicates": hist(_detection_areas(dets, duplicates)),
        "background_fp": hist(_detection_areas(dets, background)),
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


def _fig_size(columns: Sequence[tuple[str, Analysis, Detections]], gt: GroundTruth,
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
            ax_a.text(b.get_x() + b.get_width() / 2, max(v, 0) + 0.02, _fmt(v), ha="center",
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


def _fig_labelled(columns: Sequence[tuple[str, Analysis, Detections]], gt: GroundTruth,
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
            ax_p.text(x, f + m + 0.02 * top, f"OKS {_fmt(o)}", ha="center", fontsize=8)
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


def _fig_transitions(changes: Mapping[str, Any], spec_keypoints: Sequence[str],
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


# --------------------------------------------------------------------------- sections
def _ap_table(doc: _Doc, columns: Sequence[Column]) -> None:
    keys = ("AP", "AP50", "AP75", "APm", "APl", "AR")
    doc.table(["results", *keys],
              [[label, *(_fmt(a.report["ap"][k]) for k in keys)] for label, a in columns])


def _counts_table(doc: _Doc, columns: Sequence[Column]) -> None:
    keys = (("detections", "num_detections"), ("matched", "matched"),
            ("background FP", "background_false_positives"), ("duplicates", "duplicates"),
            ("missed persons", "missed_ground_truth"),
            ("matched to crowd/unlabelled", "matched_to_ignored"),
            ("beyond maxDets", "beyond_max_dets"))
    doc.table(["results", *(k for k, _ in keys)],
              [[label, *(a.report[k] for _, k in keys)] for label, a in columns])


def _figure_sections(doc: _Doc, w: _Writer, gt: GroundTruth,
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
        fig, drawn[name] = _fig_pr(cols, oks)
        doc.image(w.figure(f"{name}.png", fig), f"precision-recall breakdown at OKS {oks:.2f}",
                  f"Precision-recall curves at OKS {oks:.2f}, errors fixed cumulatively.")
    keys = [f"{t:.2f}" for t in PR_THRESHOLDS]
    doc.table(["curve", *(f"{label}: AP at OKS {k}" for label, _ in cols for k in keys)],
              [[PR_STEP_LABELS[s], *(_fmt(a.report["pr_breakdown"][k][s])
                                     for _, a in cols for k in keys)] for s in PR_STEPS])

    doc.heading("Keypoint error types")
    doc.para("Every labelled keypoint of a detection matched to a person (at OKS 0.1) is "
             "good (KS >= 0.85 with its ground truth), jitter (KS >= 0.5), inversion (near "
             "the person's left/right partner keypoint), swap (near another person's "
             "keypoint) or miss (Ronchi & Perona's taxonomy).")
    fig, drawn["error_types"] = _fig_error_types(cols)
    doc.image(w.figure("error_types.png", fig), "error types per keypoint",
              "Share of each error type among the labelled keypoints of matched detections: "
              "overall, per body group and per keypoint (n: labelled keypoints).")
    doc.table(["results", "keypoints", *ERROR_TYPES],
              [[label, a.report["keypoints"]["labelled"],
                *(f"{100 * a.report['keypoints']['rates'][t]:.1f}%" for t in ERROR_TYPES)]
               for label, a in cols])

    doc.heading("OKS of matched detections")
    fig, drawn["oks_histogram"] = _fig_oks(cols)
    doc.image(w.figure("oks_histogram.png", fig), "histogram of OKS",
              "How well the matched detections fit their person: detections right of the "
              "dashed lines count as true positives at OKS 0.50 and 0.75.")

    doc.heading("Misses and false positives by person size")
    fig, drawn["size"] = _fig_size(columns, gt)
    doc.image(w.figure("size.png", fig), "misses and false positives by size",
              "Ground-truth persons found or missed (no detection at OKS 0.1), detections "
              "matched, duplicate (near a person a better-scoring detection took) or "
              "background false positives (below OKS 0.1 with every person), by size; and "
              "the AP of each COCO area range.")
    _counts_table(doc, cols)

    doc.heading("By number of labelled keypoints")
    fig, drawn["labelled"] = _fig_labelled(columns, gt)
    doc.image(w.figure("labelled.png", fig), "persons and errors by labelled keypoints",
              "Persons with few labelled keypoints (occluded, truncated) are missed more "
              "often and fit worse: ground-truth persons found or missed and the mean OKS of "
              "those found, and the error types of their keypoints, by the number of "
              "keypoints the person has labelled.")
    return drawn


def _fix_table(doc: _Doc, report: Mapping[str, Any]) -> None:
    fixes = report["ap_if_fixed"]
    rows = [["(as is)", *(_fmt(report["ap"][k]) for k in ("AP", "AP50", "AP75")), "+0.000"]]
    entries = [(f"{t} only", e) for t, e in fixes["alone"].items()]
    entries += [(" + ".join(e["fixed"]), e) for e in fixes["cumulative"][1:]]
    entries.append(("no background false positives", fixes["background_false_positives"]))
    rows += [[name, *(_fmt(e[k]) for k in ("AP", "AP50", "AP75")), f"{e['gain']:+.3f}"]
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
    w = _Writer(out_dir)
    doc = _Doc(title or f"posefix analysis: {name}")
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
def _oks_changes(gt: GroundTruth, before: Analysis, after: Analysis,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(persons, OKS before, OKS after) of the counted persons matched before or after
    (0 where unmatched)."""
    ob, oa = np.zeros(len(gt)), np.zeros(len(gt))
    ob[before.diagnosis.gt_index] = before.diagnosis.oks
    oa[after.diagnosis.gt_index] = after.diagnosis.oks
    persons = np.union1d(before.diagnosis.gt_index, after.diagnosis.gt_index).astype(np.int64)
    return persons, ob[persons], oa[persons]


#: A summed OKS change of an image smaller than this is no change (it would print as 0.000).
_MIN_CHANGE = 5e-4


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
    persons, ob, oa = _oks_changes(gt, b, a)
    img = gt.image_ids[persons]
    ids = np.unique(img)
    total = np.array([float(np.sum((oa - ob)[img == i])) for i in ids])
    order = np.argsort(-total, kind="stable")
    best = [i for i in order[:num] if total[i] >= _MIN_CHANGE]
    worst = [i for i in order[::-1][:num] if total[i] <= -_MIN_CHANGE]
    picks = {kind: [{"image_id": int(ids[k]), "oks_change": total[k]} for k in chosen]
             for kind, chosen in (("best", best), ("worst", worst))}
    return picks, img, ob, oa


def _examples(gt: GroundTruth, before: Detections, after: Detections,
              analyses: tuple[Analysis, Analysis], images: Mapping[int, str | Path] | None,
              num: int, exif: str, labels: tuple[str, str], w: _Writer, doc: _Doc,
              ) -> list[dict[str, Any]]:
    """Draw the images whose persons' OKS rose most and fell most."""
    from .images import load_image
    from .visualize import render_panels

    picks, img, ob, oa = _pick_examples(gt, *analyses, num)
    out = []
    for kind in ("best", "worst"):
        verb, base = ("rose", "rise") if kind == "best" else ("fell", "fall")
        doc.heading(f"Images whose OKS {verb} most")
        if not picks[kind]:
            doc.para(f"No image: on no image did the summed OKS of its persons {base} by "
                     f"{_MIN_CHANGE:g} or more.")
        for rank, pick in enumerate(picks[kind], 1):
            image_id, change = pick["image_id"], pick["oks_change"]
            sel = (img == image_id) & (np.abs(oa - ob) >= _MIN_CHANGE)
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
            canvas = render_panels(picture, panels, gt.spec, max_side=_EXAMPLE_MAX_SIDE,
                                   min_side=_EXAMPLE_MIN_SIDE)
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
                                         "mean_oks_before", "mean_oks_after", "error_changes")}
    db, da = diagnoses if diagnoses is not None else (None, None)
    b, a = run_analysis(gt, before, diagnosis=db), run_analysis(gt, after, diagnosis=da)
    w = _Writer(out_dir)
    doc = _Doc(f"posefix refine: {Path(str(summary.get('results', labels[0]))).name} → "
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


def _refine_intro(doc: _Doc, r: Mapping[str, Any], summary: Mapping[str, Any],
                  comparison: Mapping[str, Any], labels: tuple[str, str]) -> None:
    """The refine report's first paragraph and its AP table, before and after."""
    files = (f" ({summary['results']} and {summary['out']})"
             if "results" in summary and "out" in summary else "")
    doc.para(f"The {labels[0]} and the {labels[1]} results{files} against the ground truth "
             f"(keypoint spec {r['spec']}, {r['num_images']} images, {r['num_ground_truth']} "
             "persons counted). Every figure shows the two side by side.")
    keys = ("AP", "AP50", "AP75", "APm", "APl", "AR")
    ab, aa = comparison["ap_before"], comparison["ap_after"]
    doc.table(["", *keys, "mean OKS (matched)"], [
        [labels[0], *(_fmt(ab[k]) for k in keys), _fmt(comparison["mean_oks_before"])],
        [labels[1], *(_fmt(aa[k]) for k in keys), _fmt(comparison["mean_oks_after"])],
        ["change", *(f"{aa[k] - ab[k]:+.3f}" if min(aa[k], ab[k]) >= 0 else "n/a"
                     for k in keys),
         f"{comparison['mean_oks_after'] - comparison['mean_oks_before']:+.3f}"],
    ])


def _transition_section(doc: _Doc, w: _Writer, gt: GroundTruth, ch: Mapping[str, Any],
                        labels: tuple[str, str]) -> dict[str, Any]:
    """What refinement did to each keypoint: the transitions figure, its sentences and
    tables; returns the numbers drawn."""
    doc.heading("What refinement did to each keypoint")
    fig, drawn = _fig_transitions(ch, gt.spec.keypoints, labels)
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
