"""A hand-written mutation sample of the core modules: does each one-token change fail a test?

Each mutant replaces one exact piece of text (found exactly once) in one file of a private
copy of ``src/`` (the worktree is never touched), then runs the mutant's relevant test files
with ``pytest -x -q`` against that copy (``PYTHONPATH``; no bytecode is written). A mutant is
*killed* when pytest fails, *survived* when it passes; a first run on the unmutated copy must
pass. ``--exclude`` leaves test files out, to show which tests are the ones that kill::

    OMP_NUM_THREADS=1 python benchmarks/mutants.py --out runs/mutants.json
    OMP_NUM_THREADS=1 python benchmarks/mutants.py --only issue- --exclude tests/test_mutants.py \
        --exclude tests/test_specs_sources.py

The verdict on every survivor is in docs/mutation-testing.md. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str  # relative to src/posefix
    old: str
    new: str
    tests: tuple[str, ...]  # test file names under tests/


SIM = ("test_similarity.py", "test_mutants.py", "test_diagnosis.py")
DIAG = ("test_diagnosis.py", "test_mutants.py")
EVAL = ("test_evaluate.py",)
SYN = ("test_synthesis.py",)
GEO = ("test_geometry.py", "test_augment.py", "test_mutants.py")
HEAT = ("test_heatmaps.py", "test_loss.py", "test_mutants.py", "test_model.py")
DECODE = ("test_mutants.py", "test_decoding.py")
CONF = ("test_mutants.py", "test_config.py")
SPEC = ("test_specs_sources.py", "test_spec.py", "test_formats.py")
FMT = ("test_formats.py", "test_specs_sources.py", "test_mutants.py")
IO = ("test_io.py", "test_evaluate.py", "test_specs_sources.py", "test_mutants.py")

MUTANTS = [
    # ---- the five of issue 32 (and the spec swaps of its fourth)
    Mutant("issue-nms-other-area", "similarity.py",
           "((areas[:, None, None] + areas[None, :, None]) / 2", "(areas[None, :, None]", SIM),
    Mutant("issue-background-threshold", "diagnosis.py",
           "(mt.max_oks < oks_threshold)", "(mt.max_oks < 0.5)", DIAG),
    Mutant("issue-decode-gate-le", "decoding.py",
           "np.float32) < np.float32(self.gate)) & present",
           "np.float32) <= np.float32(self.gate)) & present", DECODE),
    Mutant("issue-body25-eyes", "specs/body25.yaml",
           "left_ankle, right_eye, left_eye,", "left_ankle, left_eye, right_eye,", SPEC),
    Mutant("issue-override-split", "config.py",
           'key, raw = item.split("=", 1)', 'key, raw = item.split("=")[:2]', CONF),
    # ---- similarity
    Mutant("sim-nms-kept-area", "similarity.py",
           "((areas[:, None, None] + areas[None, :, None]) / 2", "(areas[:, None, None]", SIM),
    Mutant("sim-nms-suppress-ge", "similarity.py",
           "suppressed |= pair_oks[i] > threshold", "suppressed |= pair_oks[i] >= threshold",
           SIM),
    Mutant("sim-nms-valid-ge", "similarity.py",
           "np.asarray(keypoint_scores) > min_keypoint_score",
           "np.asarray(keypoint_scores) >= min_keypoint_score", SIM),
    Mutant("sim-variance-no-2", "similarity.py",
           "(2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2",
           "np.asarray(sigmas, dtype=np.float64) ** 2", SIM + EVAL),
    Mutant("sim-oks-n-ge-0", "similarity.py",
           "np.where(n > 0, (ks * vis)", "np.where(n >= 0, (ks * vis)", SIM),
    Mutant("sim-box-fallback-3w", "similarity.py",
           "hi = (boxes[:, :2] + 2 * boxes[:, 2:])", "hi = (boxes[:, :2] + 3 * boxes[:, 2:])",
           SIM + EVAL),
    # ---- diagnosis
    Mutant("diag-default-threshold", "diagnosis.py",
           "DEFAULT_OKS_THRESHOLD = 0.1", "DEFAULT_OKS_THRESHOLD = 0.5", DIAG),
    Mutant("diag-good-gt", "diagnosis.py",
           "[~labelled, ks >= KS_GOOD,", "[~labelled, ks > KS_GOOD,", DIAG),
    Mutant("diag-inversion-partner-unlabelled", "diagnosis.py",
           "inv_ok = has_partner[None] & labelled[:, p_idx]", "inv_ok = has_partner[None]",
           DIAG),
    Mutant("diag-swap-includes-self", "diagnosis.py",
           "keep = o != gt_index[p]", "keep = o == o", DIAG),
    Mutant("diag-missed-counts-ignored", "diagnosis.py",
           "missed = np.flatnonzero(~ignored_gt & ~matched_gts)",
           "missed = np.flatnonzero(~matched_gts)", DIAG),
    # ---- evaluate
    Mutant("eval-maxdets-le", "evaluate.py", "top = rank < max_dets", "top = rank <= max_dets",
           EVAL),
    Mutant("eval-medium-64", "evaluate.py",
           '"medium": (32.0 ** 2, 96.0 ** 2)', '"medium": (32.0 ** 2, 64.0 ** 2)', EVAL),
    Mutant("eval-recall-side-right", "evaluate.py",
           'np.searchsorted(rc, RECALL_THRESHOLDS, side="left")',
           'np.searchsorted(rc, RECALL_THRESHOLDS, side="right")', EVAL),
    Mutant("eval-area-upper-ge", "evaluate.py",
           "gt.areas[None] > ranges[:, 1:])", "gt.areas[None] >= ranges[:, 1:])", EVAL),
    # ---- synthesis
    Mutant("syn-person-miss-gt", "synthesis.py",
           'miss = (u[:, 0] < rates["person_miss"])', 'miss = (u[:, 0] > rates["person_miss"])',
           SYN),
    Mutant("syn-swap-sides-always", "synthesis.py",
           "swap_sides = (u[..., 1] < 0.5)", "swap_sides = (u[..., 1] < 1.0)", SYN),
    Mutant("syn-type-draw-lt", "synthesis.py",
           "t = np.minimum((cum <= u[:, None]).sum(1), 4)",
           "t = np.minimum((cum < u[:, None]).sum(1), 4)", SYN),
    Mutant("syn-radii-order", "synthesis.py",
           "for k in (KS_GOOD, KS_JITTER, KS_MISS)]", "for k in (KS_JITTER, KS_GOOD, KS_MISS)]",
           SYN),
    # ---- geometry
    Mutant("geo-flip-width", "geometry.py",
           "kp[..., 0] = width - 1 - kp[..., 0]", "kp[..., 0] = width - kp[..., 0]", GEO),
    Mutant("geo-aspect-ge", "geometry.py", "wide = w > aspect * h", "wide = w >= aspect * h",
           GEO),
    Mutant("geo-box-min-size", "geometry.py",
           "size = np.maximum((hi - lo) * enlarge, min_size)",
           "size = np.minimum((hi - lo) * enlarge, min_size)", GEO),
    Mutant("geo-iou-abs", "geometry.py",
           "inter = np.clip(hi - lo, 0, None).prod(-1)", "inter = np.abs(hi - lo).prod(-1)", GEO),
    Mutant("geo-sanitize-width", "geometry.py",
           "x1 + np.maximum(0.0, b[:, 2] - 1)", "x1 + np.maximum(0.0, b[:, 2])", GEO),
    Mutant("geo-rotation-sign", "geometry.py",
           "m[:, 1, 0], m[:, 1, 1] = -sin, cos", "m[:, 1, 0], m[:, 1, 1] = sin, cos", GEO),
    # ---- heatmaps
    Mutant("heat-pixels-no-half", "heatmaps.py",
           "return (c + 0.5) / _stride_xy(stride, c) - 0.5", "return c / _stride_xy(stride, c)",
           HEAT),
    Mutant("heat-confidence-window", "heatmaps.py",
           "mx = ((gx - torch.round(x)).abs() <= 1)", "mx = ((gx - torch.round(x)).abs() < 1)",
           HEAT),
    Mutant("heat-local-radius-lt", "heatmaps.py",
           "inside = (((gy.view(1, 1, h, 1) - by.unsqueeze(-1)).abs() <= radius)",
           "inside = (((gy.view(1, 1, h, 1) - by.unsqueeze(-1)).abs() < radius)", HEAT),
    Mutant("heat-render-valid-ge", "heatmaps.py",
           "on = (pts[..., 2:3] > 0).to(pts.dtype)\n    return",
           "on = (pts[..., 2:3] >= 0).to(pts.dtype)\n    return", HEAT),
    Mutant("heat-bilinear-clamp-w", "heatmaps.py",
           "x = c[..., 0:1].clamp(0, w - 1)", "x = c[..., 0:1].clamp(0, w)", HEAT),
    Mutant("heat-input-sigma", "heatmaps.py",
           "(h + 192.0) / 448.0", "(h + 192.0) / 440.0", HEAT),
    # ---- decoding
    Mutant("decode-gate-absent-input", "decoding.py",
           "np.float32(self.gate)) & present", "np.float32(self.gate))", DECODE),
    Mutant("decode-blend-direction", "decoding.py",
           "kept = kept + step * (out - kept)", "kept = out + step * (kept - out)", DECODE),
    # ---- config
    Mutant("conf-gate-lt-1", "config.py",
           "0 <= self.error_gate <= 1, ", "0 <= self.error_gate < 1, ", CONF),
    Mutant("conf-untyped-values", "config.py",
           "            value = yaml.safe_load(raw)\n", "            value = raw\n", CONF),
    # ---- spec (code and files)
    Mutant("spec-flip-one-way", "spec.py",
           "            perm[i], perm[j] = j, i\n        return perm",
           "            perm[i] = j\n        return perm", SPEC),
    Mutant("spec-ignore-used", "spec.py",
           "mask[list(self.ignore)] = False", "mask[list(self.ignore)] = True", SPEC),
    Mutant("spec-mapping-default-0", "spec.py",
           "pos.get(n, -1) for n in self.keypoints", "pos.get(n, 0) for n in self.keypoints",
           SPEC),
    Mutant("spec-mpii-pelvis-thorax", "specs/mpii16.yaml",
           "left_ankle, pelvis, thorax,", "left_ankle, thorax, pelvis,", SPEC),
    Mutant("spec-aic-head-neck", "specs/aic14.yaml",
           "left_knee, left_ankle, head_top, neck]", "left_knee, left_ankle, neck, head_top]",
           SPEC),
    Mutant("spec-openpose18-hips", "specs/openpose18.yaml",
           "left_wrist, right_hip, right_knee, right_ankle, left_hip,",
           "left_wrist, left_hip, right_knee, right_ankle, right_hip,", SPEC),
    Mutant("spec-crowdpose-sigma", "specs/crowdpose14.yaml",
           "0.089, 0.089,\n         0.079, 0.079]", "0.089, 0.089,\n         0.079, 0.026]",
           SPEC),
    # ---- formats and io
    Mutant("fmt-score-counts-zero", "formats.py",
           "np.maximum((s > 0).sum(1), 1)", "np.maximum((s >= 0).sum(1), 1)", FMT),
    Mutant("io-category-names", "groundtruth.py",
           '.strip().lower().replace(" ", "_")', '.strip().lower().replace(" ", "")', IO),
    Mutant("io-posetrack-area", "persons.py",
           'areas = np.array([float(a["area"]) if "area" in a else float(boxes[r, 2] * '
           'boxes[r, 3])',
           'areas = np.array([float(a["area"]) if "area" in a else float(boxes[r, 2] * '
           'boxes[r, 2])', IO),
    Mutant("io-mpii-visibility-1", "mpii.py", "kp[vis, 2] = 2", "kp[vis, 2] = 1", IO),
]


def run_tests(src: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    """pytest -x -q on ``tests`` with ``src`` first on the path: (passed|failed|timeout,
    seconds, the failing test, else the last line of its output)."""
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            *tests], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t, ""
    lines = [x for x in p.stdout.splitlines() if x.strip()]
    failed = [x.split(" - ")[0].removeprefix("FAILED ") for x in lines
              if x.startswith(("FAILED ", "ERROR "))]
    return ("passed" if p.returncode == 0 else "failed", time.perf_counter() - t,
            failed[0] if failed else lines[-1] if lines else p.stderr[-200:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[],
                    help="run the mutants whose id starts with this (repeatable)")
    ap.add_argument("--exclude", action="append", default=[],
                    help="a test file to leave out (repeatable), e.g. tests/test_mutants.py")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per test run")
    ap.add_argument("--out", type=Path, help="write the results here as JSON")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not a.only or any(m.id.startswith(o) for o in a.only)]
    if a.list:
        for m in chosen:
            print(f"{m.id:36s} {m.file}")
        return 0
    excluded = {Path(e).name for e in a.exclude}
    work = Path(tempfile.mkdtemp(prefix="posefix-mutants-"))
    try:
        src = work / "src"
        shutil.copytree(REPO / "src" / "posefix", src / "posefix",
                        ignore=shutil.ignore_patterns("__pycache__"))
        pristine = {}
        for m in chosen:
            text = (src / "posefix" / m.file).read_text()
            if text.count(m.old) != 1:
                raise SystemExit(f"{m.id}: the text to replace occurs {text.count(m.old)} "
                                 f"times in {m.file}")
            pristine[m.file] = text
        all_tests = sorted({f"tests/{t}" for m in chosen for t in m.tests
                            if t not in excluded})
        status, secs, last = run_tests(src, all_tests, a.timeout)
        print(f"baseline (unmutated): {status} in {secs:.0f} s: {last}", flush=True)
        if status != "passed":
            return 2
        results = []
        for m in chosen:
            path = src / "posefix" / m.file
            path.write_text(pristine[m.file].replace(m.old, m.new, 1))
            try:
                tests = [f"tests/{t}" for t in m.tests if t not in excluded]
                status, secs, last = run_tests(src, tests, a.timeout)
            finally:
                path.write_text(pristine[m.file])
            verdict = "survived" if status == "passed" else "killed"
            results.append({"id": m.id, "file": m.file, "verdict": verdict, "status": status,
                            "seconds": round(secs, 1), "tests": tests, "failed_or_last": last})
            print(f"{verdict:8s} {m.id:36s} {secs:5.0f} s  {last}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    survived = [r["id"] for r in results if r["verdict"] == "survived"]
    print(f"{len(results)} mutants: {len(results) - len(survived)} killed, "
          f"{len(survived)} survived ({100 * len(survived) / max(len(results), 1):.0f} %)"
          + (f": {', '.join(survived)}" if survived else ""))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"excluded": sorted(excluded), "results": results},
                                    indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
