"""``posefix demo``: refine the embedded sample with the shipped demonstration model.

The sample (``posefix/assets/sample``) holds three real images that the demonstration model
never saw in training (two MS COCO val2017 images, one OCHuman image), their ground truth,
and two real estimators' poses on them (MediaPipe BlazePose run top-down on the
ground-truth boxes, and MoveNet MultiPose, bottom-up), which PoseFix never trained on.
The demo refines both, and writes into the output folder:

- ``refined_<estimator>.json``: the refined COCO keypoint results;
- ``pictures/``: ground truth | input | refined, side by side, one PNG per image;
- ``report.md`` and ``report.json``: AP before and after, and the keypoint errors (jitter,
  inversion, swap, miss) before and after.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .io import write_json_atomic

__all__ = ["SAMPLE_ESTIMATORS", "run_demo", "sample_dir"]

# Estimator name -> results file of the embedded sample.
SAMPLE_ESTIMATORS = {"blazepose": "blazepose.json", "movenet": "movenet.json"}


def sample_dir() -> Path:
    """Folder of the embedded sample (images, ``annotations.json``, estimators' results)."""
    return Path(str(resources.files("posefix").joinpath("assets/sample")))


def _report_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# posefix demo",
        "",
        "A small demonstration model (trained on a few images on a CPU; not the paper's",
        "COCO-trained model) on the embedded sample: 3 held-out images.",
        "",
        "| input | AP before | AP after | change |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        b, a = r["ap_before"], r["ap_after"]
        lines.append(f"| {r['estimator']} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    lines += ["", "Keypoint errors (Ronchi & Perona taxonomy), before -> after:", "",
              "| input | good | jitter | inversion | swap | miss |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [f"{r['errors_before'].get(t, 0)} -> {r['errors_after'].get(t, 0)}"
                 for t in ("good", "jitter", "inversion", "swap", "miss")]
        lines.append(f"| {r['estimator']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_demo(out: str | Path = "posefix-demo", checkpoint: str | Path | None = None,
             workers: int = 0) -> dict[str, Any]:
    """Refine the embedded sample's estimator outputs; write results, pictures and a report.

    Args:
        out: output folder (created).
        checkpoint: a trained checkpoint (default: the shipped demonstration model).
        workers: image-loading processes (0: in this process; the sample is small).

    Returns:
        The report (also written to ``out/report.json``).
    """
    from .checkpoint import default_checkpoint_path
    from .refine import refine_files
    from .visualize import visualize_files

    if checkpoint is None:
        try:
            checkpoint = default_checkpoint_path()
        except FileNotFoundError:
            raise FileNotFoundError(
                "this posefix has no shipped demonstration model yet: train the tiny one "
                "(about 4 minutes on 2 CPU cores, with ../shared beside the repository) and "
                "pass it: posefix train tiny_cpu run.out_dir=runs/tiny && "
                "posefix demo --checkpoint runs/tiny/final.pt") from None
    elif not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    sample = sample_dir()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gt = sample / "annotations.json"
    rows = []
    for name, file in SAMPLE_ESTIMATORS.items():
        refined = out / f"refined_{name}.json"
        summary = refine_files(
            checkpoint=checkpoint, images=sample, results=sample / file, out=refined, gt=gt,
            workers=workers, progress=False)
        visualize_files(
            images=sample, out=out / "pictures" / name, gt=gt,
            results=[f"{name} (input)={sample / file}", f"refined={refined}"])
        rows.append({
            "estimator": name,
            "refined": str(refined),
            "ap_before": summary["ap_before"]["AP"],
            "ap_after": summary["ap_after"]["AP"],
            "errors_before": summary["errors_before"],
            "errors_after": summary["errors_after"],
            "summary": summary,
        })
    report = {"sample": str(sample), "out": str(out), "rows": rows}
    write_json_atomic(out / "report.json", json.loads(json.dumps(report, default=str)), indent=2)
    md = _report_markdown(rows)
    (out / "report.md").write_text(md)
    print(md)
    print(f"refined results: {', '.join(r['refined'] for r in rows)}")
    print(f"pictures: {out / 'pictures'}")
    print(f"report: {out / 'report.md'}")
    return report
