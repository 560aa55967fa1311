"""posefix.report: the figures, report.md and index.html of a diagnosis, on real data."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from posefix import figures
from posefix import report as report_mod
from posefix.comparison import compare_results
from posefix.diagnosis import PR_STEPS, classify_keypoints, fix_errors, run_analysis
from posefix.evaluate import RECALL_THRESHOLDS, evaluate
from posefix.figures import PALETTE
from posefix.io import Detections, GroundTruth, load_ground_truth, load_results
from posefix.report import write_analysis_report, write_refine_report
from posefix.taxonomy import ERROR_TYPES

FIGURES = ("pr_oks50.png", "pr_oks75.png", "error_types.png", "oks_histogram.png", "size.png",
           "labelled.png")


@pytest.fixture(scope="module")
def lsp_test(shared_data: Path) -> tuple[GroundTruth, Detections]:
    """LSP's test split in the COCO-17 layout (face unlabelled) and PoseNet's results."""
    path = shared_data / "lsp" / "coco17.json"
    test = {im["id"] for im in json.loads(path.read_text())["images"]
            if im.get("split") == "test"}
    full = load_ground_truth(path)
    gt = full.subset(np.flatnonzero(np.isin(full.image_ids, list(test))), image_ids=test)
    dets = load_results(shared_data / "lsp" / "posenet_gtboxes.json", gt.spec)
    assert len(gt) == len(gt.images) == 800
    return gt, dets


@pytest.fixture(scope="module")
def lsp_report(lsp_test: tuple[GroundTruth, Detections],
               tmp_path_factory: pytest.TempPathFactory) -> dict:
    gt, dets = lsp_test
    return write_analysis_report(gt, dets, tmp_path_factory.mktemp("lsp") / "report")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("href", "src") and v is not None]


def check_links(index: Path) -> list[str]:
    """Every href/src of the page is relative and names an existing file; returns them."""
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    assert parser.links
    for link in parser.links:
        u = urlparse(link)
        assert not u.scheme and not u.netloc and not link.startswith("/"), link
        assert (index.parent / u.path).is_file(), link
    return parser.links


def check_png(path: Path) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 300 and im.height >= 200


def test_every_figure_written_and_linked(lsp_report: dict) -> None:
    root = lsp_report["index"].parent
    assert lsp_report["index"] == root / "index.html"
    for name in ("report.md", "report.json", "figures.json"):
        assert (root / name).is_file()
    assert sorted(lsp_report["figures"]) == sorted(FIGURES)
    for name in FIGURES:
        check_png(root / name)
    links = check_links(root / "index.html")
    assert set(FIGURES) | {"report.md", "report.json", "figures.json"} <= set(links)
    md = (root / "report.md").read_text(encoding="utf-8")
    for name in FIGURES:
        assert f"]({name})" in md
    assert json.loads((root / "report.json").read_text()) == json.loads(
        json.dumps(lsp_report["analysis"]))


def test_legend_areas_are_the_reported_ap(lsp_test: tuple[GroundTruth, Detections],
                                          lsp_report: dict) -> None:
    gt, dets = lsp_test
    r = lsp_report["analysis"]
    base = evaluate(gt, dets)
    fixed = evaluate(gt, fix_errors(gt, dets, classify_keypoints(gt, dets),
                                    ["miss", "swap", "inversion", "jitter"]))
    for oks, stat in ((0.5, "AP50"), (0.75, "AP75")):
        drawn = lsp_report["drawn"][f"pr_oks{round(100 * oks)}"]["results"]
        key = f"{oks:.2f}"
        assert drawn["ap"] == r["pr_breakdown"][key]
        assert drawn["ap"]["original"] == r["ap"][stat] == base[stat]
        for entry in r["ap_if_fixed"]["cumulative"]:
            assert drawn["ap"][entry["fixed"][-1]] == entry[stat]
        assert drawn["ap"]["jitter"] == fixed[stat]
        for step, text in zip(PR_STEPS, drawn["legend"], strict=True):
            assert text.startswith(f"[{drawn['ap'][step]:.3f}]")
        # Every unmatched detection ignored: precision 1 up to the recall of the fixed results.
        recall = fixed[f"AR{stat[2:]}"]
        assert drawn["ap"]["background_fp"] == pytest.approx(
            np.mean(RECALL_THRESHOLDS <= recall + 1e-12), abs=1e-9)
        assert drawn["ap"]["false_negatives"] == pytest.approx(1.0, abs=1e-9)
        curve = [drawn["ap"][s] for s in PR_STEPS]
        assert curve[0] < curve[1] and curve == sorted(curve)  # PoseNet: misses fixed gain
    # On LSP the curves differ between thresholds.
    assert r["pr_breakdown"]["0.50"]["original"] > r["pr_breakdown"]["0.75"]["original"]


def test_error_types_and_size_numbers_are_the_reports(lsp_report: dict) -> None:
    r = lsp_report["analysis"]
    shares = lsp_report["drawn"]["error_types"]["results"]
    for kp in ("nose", "left_eye", "right_ear"):  # LSP has no face keypoints
        assert r["per_keypoint"][kp]["labelled"] == 0 and sum(shares[kp].values()) == 0
    for name, b in [("all keypoints", r["keypoints"]), ("left_knee", r["per_keypoint"]["left_knee"]),
                    ("group: lower_body", r["per_group"]["lower_body"])]:
        assert sum(shares[name].values()) == pytest.approx(100)
        for t in ERROR_TYPES:
            assert shares[name][t] == pytest.approx(100 * b["rates"][t])
    size = lsp_report["drawn"]["size"]["results"]
    assert sum(size["persons_missed"]) == r["missed_ground_truth"] > 0
    assert sum(size["persons_found"]) + r["missed_ground_truth"] == r["num_ground_truth"]
    assert sum(size["background_fp"]) == r["background_false_positives"]
    assert sum(size["duplicates"]) == r["duplicates"]
    assert sum(size["detections_matched"]) == r["matched"]
    assert size["ap_by_area"] == {"all": r["ap"]["AP"], "medium": r["ap"]["APm"],
                                  "large": r["ap"]["APl"]}
    hist = lsp_report["drawn"]["oks_histogram"]["results"]
    assert sum(hist["counts"]) == hist["n"] == r["matched"]
    by_n = lsp_report["drawn"]["labelled"]["results"]
    assert by_n["bins"] == ["1-3", "4-6", "7-9", "10-12"]  # LSP: at most 12 labelled
    assert sum(by_n["persons_missed"]) == r["missed_ground_truth"]
    assert sum(by_n["persons_found"]) + r["missed_ground_truth"] == r["num_ground_truth"]
    found = np.asarray(by_n["persons_found"])
    oks = np.asarray(by_n["mean_oks"])
    assert (oks[found > 0] > 0).all() and (oks[found == 0] == -1).all()
    assert float((found * np.where(found > 0, oks, 0)).sum() / found.sum()) == \
        pytest.approx(hist["mean"])
    for i in np.flatnonzero(found):
        assert sum(by_n["shares"][t][i] for t in ERROR_TYPES) == pytest.approx(100)


def test_crowdpose14_with_duplicates_and_background(data_dir: Path, tmp_path: Path) -> None:
    gt = load_ground_truth(data_dir / "crowdpose" / "test_crowdpose.json")
    assert gt.spec.num_keypoints == 14
    rows = np.flatnonzero(gt.num_labelled > 0)
    rng = np.random.default_rng(0)
    kp = gt.keypoints[rows].copy()
    kp[..., :2] += rng.normal(0, 3, kp[..., :2].shape)
    kp[..., 2] = 1
    dup = kp[:1].copy()  # a lower-scoring copy of the first person: a duplicate
    far = kp[:1].copy()
    far[..., :2] += 5000  # nowhere near anyone: a background false positive
    dets = Detections(
        image_ids=np.concatenate([gt.image_ids[rows], gt.image_ids[rows[:1]].repeat(2)]),
        keypoints=np.concatenate([kp, dup, far]),
        scores=np.concatenate([np.linspace(0.9, 0.5, len(rows)), [0.2, 0.1]]),
        boxes=np.full((len(rows) + 2, 4), np.nan),
        category_ids=np.ones(len(rows) + 2, dtype=np.int64))
    out = write_analysis_report(gt, dets, tmp_path / "crowdpose")
    r = out["analysis"]
    assert r["spec"] == "crowdpose14" and r["duplicates"] == 1
    assert r["background_false_positives"] == 1
    size = out["drawn"]["size"]["results"]
    assert sum(size["duplicates"]) == 1 and sum(size["background_fp"]) == 1
    assert set(out["drawn"]["error_types"]["results"]) >= set(gt.spec.keypoints)
    for oks in ("0.50", "0.75"):
        assert out["drawn"][f"pr_oks{oks[2:]}"]["results"]["ap"] == r["pr_breakdown"][oks]
    for name in FIGURES:
        check_png(tmp_path / "crowdpose" / name)
    check_links(out["index"])
    # every page and figure is readable by others under the usual umask (not mkstemp's 0600)
    mask = os.umask(0)
    os.umask(mask)
    for f in (tmp_path / "crowdpose").rglob("*"):
        if f.is_file():
            assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


def test_a_failed_rerun_leaves_no_complete_report(lsp_test: tuple[GroundTruth, Detections],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gt, dets = lsp_test
    gt, dets = gt.subset(np.arange(40)), dets.select(np.isin(dets.image_ids, gt.image_ids[:40]))
    out = tmp_path / "report"
    write_analysis_report(gt, dets, out)
    assert (out / "index.html").is_file()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "oks_figure", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_analysis_report(gt, dets, out)
    for name in ("index.html", "report.md", "report.json", "figures.json"):
        assert not (out / name).exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        write_analysis_report(gt, dets, tmp_path / "file")


def test_refine_report(coco_dir: Path, tmp_path: Path) -> None:
    gt = load_ground_truth(coco_dir / "test_coco.json")
    before = load_results(coco_dir / "movenet_multipose.json", gt.spec)
    diag = classify_keypoints(gt, before)
    after = fix_errors(gt, before, diag, ["jitter", "inversion"])
    # Make one image worse: shift its persons' keypoints by a tenth of their size.
    worse = int(gt.image_ids[diag.gt_index[0]])
    sel = after.image_ids == worse
    after.keypoints[sel, :, 0] += 0.1 * np.sqrt(gt.areas[diag.gt_index[0]])
    summary = compare_results(gt, before, after)
    out = write_refine_report(gt, before, after, tmp_path / "refine", summary=summary)
    root = tmp_path / "refine"
    for name in (*FIGURES, "transitions.png"):
        check_png(root / name)
    check_links(out["index"])

    # The same numbers as refine's summary (--json) and as each side's own analysis.
    ch = summary["error_changes"]
    drawn = out["drawn"]["transitions"]
    assert drawn["matrix"].tolist() == ch["transitions"]
    per_kp = np.array([ch["per_keypoint"][k] for k in gt.spec.keypoints])
    assert per_kp.sum(0).tolist() == ch["transitions"]
    j, i, g = (ERROR_TYPES.index(t) for t in ("jitter", "inversion", "good"))
    assert sum(drawn["fixed"][k]["jitter"] for k in gt.spec.keypoints) == ch["fixed"]["jitter"]
    assert ch["fixed"]["jitter"] == per_kp[:, j, g].sum() > 0
    assert per_kp[:, i, g].sum() > 0 and per_kp[:, j, j].sum() == 0  # no jitter stays jitter
    comp = out["analysis"]["comparison"]
    assert comp["ap_before"] == evaluate(gt, before) and comp["ap_after"] == evaluate(gt, after)
    for label, dets in (("input", before), ("refined", after)):
        a = run_analysis(gt, dets).report
        assert out["analysis"][label]["pr_breakdown"] == a["pr_breakdown"]
        for oks in ("0.50", "0.75"):
            assert out["drawn"][f"pr_oks{oks[2:]}"][label]["ap"] == a["pr_breakdown"][oks]
    hist = out["drawn"]["oks_histogram"]
    assert hist["input"]["mean"] == pytest.approx(summary["mean_oks_before"])
    assert hist["refined"]["mean"] == pytest.approx(summary["mean_oks_after"])

    # Examples: the improved images first, the worsened image among the worst, all drawn.
    ex = out["drawn"]["examples"]
    best = [e for e in ex if e["kind"] == "best"]
    worst = [e for e in ex if e["kind"] == "worst"]
    assert best and all(e["oks_change"] > 0 for e in best)
    assert [e["image_id"] for e in worst] == [worse] and worst[0]["oks_change"] < 0
    for e in ex:
        assert e["drawn"]
        check_png(root / e["png"])
    assert "examples/worst_1.png" in check_links(out["index"])


def test_palette_covers_every_type_and_step() -> None:
    assert set(ERROR_TYPES) <= set(PALETTE)
    assert set(PR_STEPS) - {"original"} <= set(PALETTE)
    steps = [PALETTE[s] for s in PR_STEPS]
    assert len(set(steps)) == len(steps)


# ------------------------------------------------------------------ edge cases, on the sample
def _sample(folder: str, estimator: str) -> tuple[GroundTruth, Detections]:
    from posefix.commands.demo import sample_dir

    root = sample_dir() / folder
    gt = load_ground_truth(root / "annotations.json", image_root=root)
    return gt, load_results(root / f"{estimator}.json", gt.spec)


def test_refine_report_says_so_where_no_keypoint_changed(tmp_path: Path) -> None:
    # The demo's multi-person BlazePose case: OKS-NMS removes a duplicate, no keypoint moves.
    gt, before = _sample(".", "blazepose")
    d = classify_keypoints(gt, before)
    after = before.select(np.setdiff1d(np.arange(len(before)), [d.det_index[-1]]))
    out = write_refine_report(gt, before, after, tmp_path / "r")
    md = out["markdown"].read_text()
    assert "Refinement fixed no keypoint error and made none" in md
    assert "→ good |" not in md  # no per-keypoint table of zeros
    with Image.open(out["figures"]["transitions.png"]) as im:
        assert im.width < 800  # the matrix alone, no empty per-keypoint panel
    assert "No image: on no image did the summed OKS of its persons rise" in md
    ex = out["drawn"]["examples"]
    assert ex and all(e["kind"] == "worst" and e["detections_removed"] == 1 for e in ex)


def test_refine_report_lists_only_real_changes_and_marks_moved_keypoints(
        tmp_path: Path) -> None:
    gt, before = _sample("lsp", "posenet")
    after = Detections(image_ids=before.image_ids, keypoints=before.keypoints.copy(),
                       scores=before.scores, boxes=before.boxes,
                       category_ids=before.category_ids)
    after.keypoints[:, :, :2] += 0.01  # a change that prints as 0.000 on every image
    g = int(gt.indices_of_image(int(before.image_ids[0]))[0])
    off = np.linalg.norm(before.keypoints[0, :, :2] - gt.keypoints[g, :, :2], axis=-1)
    k = int(np.argmax(np.where(gt.keypoints[g, :, 2] > 0, off, -1)))  # its worst keypoint
    after.keypoints[0, k, :2] = gt.keypoints[g, k, :2]  # one real change: put on the truth
    out = write_refine_report(gt, before, after, tmp_path / "r")
    ex = out["drawn"]["examples"]
    assert len(ex) == 1 and ex[0]["kind"] == "best" and ex[0]["oks_change"] >= 5e-4
    assert ex[0]["keypoints_moved"] == 1
    md = out["markdown"].read_text()
    assert "-0.000" not in md and "+0.000 (" not in md
    with Image.open(tmp_path / "r" / ex[0]["png"]) as im:
        pic = np.asarray(im.convert("RGB"))
    assert max(pic.shape[0] - 28, (pic.shape[1] - 12) / 3) >= 480  # enlarged LSP image
    third = pic[:, 2 * (pic.shape[1] - 12) // 3 + 12:]
    magenta = np.abs(third.astype(int) - [235, 30, 235]).max(-1) <= 20
    assert magenta.sum() > 10  # the moved knee is marked in the refined panel


def test_mean_oks_like_for_like_counts_the_persons_matched_both_times() -> None:
    gt, before = _sample(".", "blazepose")
    diag = classify_keypoints(gt, before)
    lost = before.image_ids[diag.det_index[0]]  # refinement "lost" this image's persons
    after = before.select(np.flatnonzero(before.image_ids != lost))
    s = compare_results(gt, before, after)
    rest = diag.oks[gt.image_ids[diag.gt_index] != lost]
    assert 0 < len(rest) < len(diag.oks)
    assert s["mean_oks_both"] == pytest.approx([rest.mean(), rest.mean()])
    assert s["mean_oks_before"] == pytest.approx(diag.oks.mean())
    assert abs(diag.oks.mean() - rest.mean()) > 1e-4  # the lost persons mattered
    assert s["error_changes"]["persons_compared"] == len(rest)


def test_count_axes_have_integer_ticks() -> None:
    gt, before = _sample(".", "blazepose")
    after = fix_errors(gt, before, classify_keypoints(gt, before), ["jitter"])
    ch = compare_results(gt, before, after)["error_changes"]
    per_kp = np.array(list(ch["per_keypoint"].values()))
    assert 0 < per_kp[:, 1, 0].max() <= 4  # a few per keypoint: matplotlib would pick 0.5s
    a = run_analysis(gt, before)
    for fig in (figures.transition_figure(ch, gt.spec.keypoints, ("a", "b"))[0],
                figures.oks_figure([("a", a)])[0]):
        fig.canvas.draw()
        counted = [ax for ax in fig.axes if ax.get_xlabel().startswith("keypoints")
                   or ax.get_ylabel() == "matched detections"]
        assert counted
        for ax in counted:
            axis = ax.xaxis if ax.get_xlabel().startswith("keypoints") else ax.yaxis
            lo, hi = sorted(axis.get_view_interval())
            ticks = [t for t in axis.get_ticklocs() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            assert all("-" not in x and "−" not in x for x in labels)  # counts, not signs


def test_label_colours_are_readable_on_white() -> None:
    def contrast(rgb: tuple[float, float, float]) -> float:
        c = np.asarray(rgb)
        lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 1.05 / (float(lin @ [0.2126, 0.7152, 0.0722]) + 0.05)

    from matplotlib.colors import to_rgb

    assert contrast(to_rgb(PALETTE["jitter"])) < 2  # the light yellow as it is
    for t in ERROR_TYPES:
        ink = figures.ink(PALETTE[t])
        assert contrast(ink) >= 3.0, t
        hue = np.asarray(ink) / max(ink)
        assert np.allclose(hue, np.asarray(to_rgb(PALETTE[t])) / max(to_rgb(PALETTE[t])),
                           atol=0.2)  # the same colour, darker
    gt, before = _sample(".", "blazepose")
    ch = compare_results(gt, before, before)["error_changes"]
    fig, _ = figures.transition_figure(ch, gt.spec.keypoints, ("a", "b"))
    colours = [t.get_color() for t in fig.axes[0].get_yticklabels()]
    assert colours == [figures.ink(PALETTE[t]) for t in ERROR_TYPES]


def test_reports_say_why_a_figure_is_empty(tmp_path: Path) -> None:
    gt, dets = _sample(".", "movenet")
    none = Detections.empty(gt.spec.num_keypoints)
    out = write_analysis_report(gt, none, tmp_path / "a")
    md = out["markdown"].read_text()
    assert "no detections, so no precision-recall curve, keypoint error type or OKS" in md
    assert out["drawn"]["oks_histogram"]["results"]["n"] == 0
    for name in ("pr_oks50.png", "error_types.png", "oks_histogram.png"):
        check_png(out["figures"][name])
    # Refinement that lost every detection: nothing to compare keypoint by keypoint.
    out = write_refine_report(gt, dets, none, tmp_path / "r")
    md = out["markdown"].read_text()
    assert "refined: no detections" in md
    assert "No person was matched both input and refined" in md
    assert "No image: on no image did the summed OKS of its persons rise" in md


def test_align_rows_finds_each_refined_rows_input() -> None:
    from posefix.comparison import align_rows

    _, dets = _sample("lsp", "movenet")  # several detections on some images
    counts = np.bincount(np.unique(dets.image_ids, return_inverse=True)[1])
    crowded = int(np.unique(dets.image_ids)[np.argmax(counts)])
    rows = np.flatnonzero(dets.image_ids == crowded)
    assert len(rows) >= 3
    drop = rows[1]  # a middle row suppressed
    keep = np.setdiff1d(np.arange(len(dets)), [drop])
    after = dets.select(keep)
    rng = np.random.default_rng(0)
    after.keypoints[:, :, :2] += rng.normal(0, 2.0, after.keypoints[:, :, :2].shape)  # moved
    assert (align_rows(dets, after) == keep).all()
    sub = dets.select(np.r_[rows, rows[0]])  # one row more after than before
    assert (align_rows(dets, sub) == -1).all()  # unaligned: nothing wrongly marked
