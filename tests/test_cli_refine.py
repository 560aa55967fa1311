"""``posefix refine`` end to end: the real command on the real estimators' outputs of
tests/data/coco (a copy of ../shared/data/coco), with a checkpoint trained by the tiny
config (a bounded number of steps, cached between sessions), and its refusals of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from posefix.io import load_results

REPO = Path(__file__).resolve().parents[1]
POSEFIX = str(Path(sys.executable).parent / "posefix")
TRAIN_STEPS = 40

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The installed ``posefix`` command."""
    return subprocess.run([POSEFIX, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_cpu_data: list[str]) -> Path:
    """``posefix train tiny_cpu`` (on its data's copy in tests/data) for TRAIN_STEPS steps,
    cached in the temp folder by the hash of the config and the package sources (a killed run
    resumes there)."""
    from importlib import resources

    text = resources.files("posefix").joinpath("configs/tiny_cpu.yaml").read_text()
    h = hashlib.sha256(text.encode())
    for name in ("model.py", "train.py", "data.py", "synthesis.py", "heatmaps.py", "loss.py"):
        h.update((REPO / "src" / "posefix" / name).read_bytes())
    h.update(str(TRAIN_STEPS).encode())
    h.update("\n".join(tiny_cpu_data).encode())
    cache = Path(os.environ.get("POSEFIX_TEST_CACHE", Path(tempfile.gettempdir()) /
                                "posefix-test-cache"))
    out_dir = cache / f"tiny_cpu-{h.hexdigest()[:16]}"
    final = out_dir / "final.pt"
    if not final.is_file():
        r = run("train", "tiny_cpu", *tiny_cpu_data, f"run.out_dir={out_dir}",
                f"optim.max_steps={TRAIN_STEPS}", "run.val_every=0", "run.progress=false",
                "data.workers=1")
        assert r.returncode == 0, r.stderr[-3000:]
    assert final.is_file()
    return final


@pytest.fixture(scope="session")
def synthesized(coco_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic input poses made from the ground truth by ``posefix synthesize``."""
    out = tmp_path_factory.mktemp("synth") / "synthesized.json"
    r = run("synthesize", "--gt", coco_dir / "test_coco.json", "--out", out, "--seed", "3")
    assert r.returncode == 0, r.stderr
    return out


def refine_cli(ckpt: Path, coco_dir: Path, results: Path, out: Path, *extra: str | Path,
               ) -> subprocess.CompletedProcess:
    return run("refine", "--checkpoint", ckpt, "--images", coco_dir, "--results", results,
               "--out", out, "--workers", "1", "--device", "cpu", *extra)


@pytest.mark.parametrize("name", ["blazepose_gtboxes.json", "blazepose_detboxes.json",
                                  "synthesized"])
def test_refine_real_results(name: str, trained_checkpoint: Path, coco_dir: Path,
                             synthesized: Path, tmp_path: Path) -> None:
    results = synthesized if name == "synthesized" else coco_dir / name
    gt = coco_dir / "test_coco.json"
    out = tmp_path / "refined.json"
    r = refine_cli(trained_checkpoint, coco_dir, results, out, "--gt", gt, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    inputs = load_results(results, "coco17")
    refined = load_results(out, "coco17")  # validates the written file
    assert s["detections_in"] == len(inputs)
    assert len(refined) == s["detections_out"] == len(inputs) - s["suppressed_nms"]
    assert s["refined"] + s["unchanged_no_keypoints"] == len(inputs)
    assert np.all((refined.keypoints[..., 2] >= 0) & (refined.keypoints[..., 2] <= 1))
    assert s["score"] == "auto"  # the default: a network without an error head keeps the
    assert set(refined.scores.round(6)) <= set(inputs.scores.round(6))  # input person scores
    # The report's "before" is the input's own evaluation.
    ev = run("evaluate", "--gt", gt, "--results", results, "--json")
    assert ev.returncode == 0, ev.stderr
    assert s["ap_before"]["AP"] == pytest.approx(json.loads(ev.stdout)["AP"], abs=1e-9)
    ev = run("evaluate", "--gt", gt, "--results", out, "--json")
    assert s["ap_after"]["AP"] == pytest.approx(json.loads(ev.stdout)["AP"], abs=1e-9)
    for key in ("errors_before", "errors_after"):
        assert set(s[key]) == {"good", "jitter", "inversion", "swap", "miss"}
    for key in ("mean_oks_before", "mean_oks_after"):
        assert 0.1 <= s[key] <= 1.0  # matched at OKS >= 0.1
    assert "before" in s["text"] and "fixed" in s["text"]
    if name == "blazepose_gtboxes.json":
        assert s["ap_before"]["AP"] == pytest.approx(0.532, abs=5e-4)  # ../shared/README.md


def test_duplicates_are_suppressed_by_oks_nms(trained_checkpoint: Path, coco_dir: Path,
                                              tmp_path: Path) -> None:
    # Each pose twice (the copy scoring lower): the copies crop and refine identically,
    # so OKS-NMS removes exactly the copies; with --nms 0 all are kept.
    entries = json.loads((coco_dir / "blazepose_gtboxes.json").read_text())
    copies = [dict(e, score=e["score"] * 0.5) for e in entries]
    doubled = tmp_path / "doubled.json"
    doubled.write_text(json.dumps(entries + copies))
    gt = coco_dir / "test_coco.json"
    r = refine_cli(trained_checkpoint, coco_dir, doubled, tmp_path / "a.json", "--gt", gt,
                   "--json", "--score", "input")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["suppressed_nms"] == len(entries)
    kept = json.loads((tmp_path / "a.json").read_text())
    assert sorted(e["score"] for e in kept) == sorted(e["score"] for e in entries)
    r = refine_cli(trained_checkpoint, coco_dir, doubled, tmp_path / "b.json", "--gt", gt,
                   "--nms", "0", "--score", "heatmap")
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "b.json").read_text())
    assert len(out) == 2 * len(entries)
    # Rescored: the input score times the mean keypoint confidence written beside it.
    for e, o in zip(entries + copies, out, strict=True):
        assert o["score"] == pytest.approx(e["score"] * np.mean(o["keypoints"][2::3]),
                                           abs=1e-4)


def test_onnxruntime_backend_matches_torch(trained_checkpoint: Path, coco_dir: Path,
                                           tmp_path: Path) -> None:
    gt = coco_dir / "test_coco.json"
    outs = {}
    for backend in ("torch", "onnxruntime"):
        outs[backend] = tmp_path / f"{backend}.json"
        r = refine_cli(trained_checkpoint, coco_dir, coco_dir / "blazepose_detboxes.json",
                       outs[backend], "--gt", gt, "--backend", backend, "--nms", "0")
        assert r.returncode == 0, r.stderr
    a = load_results(outs["torch"], "coco17")
    b = load_results(outs["onnxruntime"], "coco17")
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    assert np.abs(a.keypoints[..., :2] - b.keypoints[..., :2]).max() < 0.01
    assert np.abs(a.keypoints[..., 2] - b.keypoints[..., 2]).max() < 1e-3


def test_refuses_to_overwrite_its_input(trained_checkpoint: Path, coco_dir: Path,
                                        tmp_path: Path) -> None:
    results = tmp_path / "in.json"
    shutil.copy(coco_dir / "blazepose_gtboxes.json", results)
    before = results.read_bytes()
    gt = coco_dir / "test_coco.json"
    for out in (results, tmp_path / "." / "in.json"):
        r = refine_cli(trained_checkpoint, coco_dir, results, out, "--gt", gt)
        assert r.returncode == 2 and "refusing to write over the input results" in r.stderr
    r = run("refine", "--checkpoint", trained_checkpoint, "--images", coco_dir, "--results",
            "in.json", "--out", "in.json", "--gt", gt, cwd=tmp_path)
    assert r.returncode == 2 and "refusing" in r.stderr
    assert results.read_bytes() == before


def test_bad_input(trained_checkpoint: Path, coco_dir: Path, tmp_path: Path) -> None:
    gt = coco_dir / "test_coco.json"
    results = coco_dir / "blazepose_gtboxes.json"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted(coco_dir.glob("*.jpg"))[1:]:
        shutil.copy(p, imgs / p.name)
    gone = sorted(coco_dir.glob("*.jpg"))[0].name
    out = tmp_path / "out.json"
    # A missing image: a clear error naming it, nothing written...
    r = refine_cli(trained_checkpoint, imgs, results, out, "--gt", gt)
    assert r.returncode == 2 and gone in r.stderr and "does not exist" in r.stderr
    assert not out.exists()
    # ... or with --skip-missing its detections are kept unrefined and counted.
    r = refine_cli(trained_checkpoint, imgs, results, out, "--gt", gt, "--skip-missing",
                   "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    image_id = next(i["id"] for i in json.loads(gt.read_text())["images"]
                    if i["file_name"] == gone)
    n_gone = sum(e["image_id"] == image_id for e in json.loads(results.read_text()))
    assert n_gone > 0 and s["skipped_missing_image"] == n_gone
    # An unreadable image names the file.
    (imgs / gone).write_bytes(b"\xff\xd8\xff not really a jpeg")
    r = refine_cli(trained_checkpoint, imgs, results, tmp_path / "o2.json", "--gt", gt)
    assert r.returncode == 2 and gone in r.stderr and "cannot read image" in r.stderr
    # No way to find the image files.
    r = refine_cli(trained_checkpoint, imgs, results, tmp_path / "o3.json")
    assert r.returncode == 2 and "--gt or --image-list" in r.stderr
    # A broken results file names itself.
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 785, "category_id": 1, "score": 1.0, "keypoints": [1, 2]}]')
    r = refine_cli(trained_checkpoint, imgs, bad, tmp_path / "o4.json", "--gt", gt)
    assert r.returncode == 2 and "bad.json" in r.stderr and "keypoints" in r.stderr
    # An error gate needs a network with an error head (the tiny one has none).
    r = refine_cli(trained_checkpoint, coco_dir, results, tmp_path / "o5.json", "--gt", gt,
                   "--error-gate", "0.5")
    assert r.returncode == 2 and "no error head" in r.stderr
    assert not (tmp_path / "o5.json").exists()
    r = refine_cli(trained_checkpoint, coco_dir, results, tmp_path / "o6.json", "--gt", gt,
                   "--error-blend", "-0.5")
    assert r.returncode == 2 and "argument --error-blend: must be a number in [0, 1], got -0.5" \
        in r.stderr
    assert not (tmp_path / "o6.json").exists()


def test_refine_report(trained_checkpoint: Path, coco_dir: Path, tmp_path: Path) -> None:
    from html.parser import HTMLParser

    gt = coco_dir / "test_coco.json"
    results = coco_dir / "blazepose_gtboxes.json"
    out, root = tmp_path / "refined.json", tmp_path / "report"
    r = refine_cli(trained_checkpoint, coco_dir, results, out, "--gt", gt, "--json",
                   "--report", root)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["report"] == str(root / "index.html")
    report = json.loads((root / "report.json").read_text())
    drawn = json.loads((root / "figures.json").read_text())
    # The report draws the summary's numbers (--json): one computation.
    for key in ("ap_before", "ap_after", "error_changes", "mean_oks_before", "mean_oks_after"):
        assert report["comparison"][key] == s[key]
    ch = s["error_changes"]
    assert drawn["transitions"]["matrix"] == ch["transitions"]
    assert np.sum([ch["per_keypoint"][k] for k in ch["per_keypoint"]], axis=0).tolist() == \
        ch["transitions"]
    # Each side's curves are its own `posefix analyze` (the refined file is rounded to 1e-4 px).
    for label, path, tol in (("input", results, 0.0), ("refined", out, 1e-6)):
        a = run("analyze", "--gt", gt, "--results", path, "--json")
        assert a.returncode == 0, a.stderr
        breakdown = json.loads(a.stdout)["pr_breakdown"]
        for oks in ("0.50", "0.75"):
            assert drawn[f"pr_oks{oks[2:]}"][label]["ap"] == pytest.approx(breakdown[oks],
                                                                           abs=tol)
    links: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            links.extend(v for k, v in attrs if k in ("href", "src") and v)

    Links().feed((root / "index.html").read_text(encoding="utf-8"))
    assert {"pr_oks50.png", "pr_oks75.png", "error_types.png", "oks_histogram.png",
            "size.png", "transitions.png"} <= set(links)
    for link in links:
        assert "://" not in link and not link.startswith("/") and (root / link).is_file()
    for e in drawn["examples"]:
        assert e["drawn"] and e["png"] in links
        assert (e["oks_change"] > 0) == (e["kind"] == "best")


def test_report_needs_gt(coco_dir: Path, tmp_path: Path) -> None:
    r = run("refine", "--checkpoint", tmp_path / "unused.pt", "--images", coco_dir,
            "--results", coco_dir / "blazepose_gtboxes.json", "--out", tmp_path / "o.json",
            "--image-list", coco_dir / "test_coco.json", "--report", tmp_path / "report")
    assert r.returncode == 2 and "pass --gt" in r.stderr
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "report").exists()


def test_visualize_cli(coco_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "vis"
    r = run("visualize", "--images", coco_dir, "--gt", coco_dir / "test_coco.json",
            "--results", f"BlazePose={coco_dir / 'blazepose_gtboxes.json'}",
            "--results", coco_dir / "movenet_multipose.json", "--out", out, "--max-images", "2")
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 and "wrote 2 image(s)" in r.stdout


def test_refine_split_selects_the_ground_truths_images(shared_data: Path,
                                                       tmp_path: Path) -> None:
    from posefix.commands.demo import sample_dir

    gt = shared_data / "lsp" / "coco17.json"
    results = sample_dir() / "lsp" / "blazepose.json"  # 36 detections on LSP test images
    common = ["refine", "--images", shared_data / "lsp", "--gt", gt, "--results", results,
              "--workers", "0", "--json"]
    proc = run(*common, "--out", tmp_path / "test.json", "--split", "test")
    assert proc.returncode == 0, proc.stderr[-2000:]
    test = json.loads(proc.stdout)
    whole = json.loads(run(*common, "--out", tmp_path / "all.json").stdout)
    assert test["detections_in"] == whole["detections_in"] == 36
    # AP counts the persons of the selected images only: 800 instead of 1,800.
    assert test["ap_before"]["AR"] > 2 * whole["ap_before"]["AR"]
    proc = run("refine", "--images", shared_data / "lsp", "--image-list", gt, "--results",
               results, "--out", tmp_path / "x.json", "--split", "test")
    assert proc.returncode == 2 and "pass --gt" in proc.stderr
