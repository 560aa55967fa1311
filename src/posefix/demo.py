"""``posefix demo``: refine the embedded sample with the shipped demonstration model.

The sample (``posefix/assets/sample``) holds real images that the demonstration model never
saw in training, in two parts: three multi-person images (two MS COCO val2017 images, one
OCHuman image) and 40 images of the Leeds Sports Pose test split (``lsp/``, every 20th);
each with its ground truth and two real estimators' poses on it (MediaPipe BlazePose run
top-down on the ground-truth boxes, and MoveNet MultiPose, bottom-up), which PoseFix never
trained on. The demo refines all four inputs, and writes into the output folder:

- ``<part>/refined_<estimator>.json``: the refined COCO keypoint results;
- ``pictures/<part>/<estimator>/``: ground truth | input | refined, one PNG per image;
- ``report.md`` and ``report.json``: AP and mean OKS before and after, and the keypoint
  errors (jitter, inversion, swap, miss) before and after.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .io import write_json_atomic

__all__ = ["SAMPLE_ESTIMATORS", "SAMPLE_PARTS", "run_demo", "sample_dir"]

# Estimator name -> results file of each part of the embedded sample.
SAMPLE_ESTIMATORS = {"blazepose": "blazepose.json", "movenet": "movenet.json"}
# Part name -> folder under the sample (images, annotations.json, estimators' results).
SAMPLE_PARTS = {"multi-person": ".", "lsp": "lsp"}
_PICTURES_PER_INPUT = 8


def sample_dir() -> Path:
    """Folder of the embedded sample (one folder per part, see ``SAMPLE_PARTS``)."""
    return Path(str(resources.files("posefix").joinpath("assets/sample")))


def _report_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# posefix demo",
        "",
        "The shipped demonstration model (a small MobileNetV2 PoseFix trained on a CPU; not the",
        "paper's COCO-trained model) on the embedded sample: images it never saw, and two real",
        "estimators it never trained on.",
        "",
        "| part | input | persons matched | AP before | AP after | change | mean OKS before -> after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        b, a = r["ap_before"], r["ap_after"]
        lines.append(f"| {r['part']} | {r['estimator']} | {r['persons']} | {b:.3f} | {a:.3f} "
                     f"| {a - b:+.3f} | {r['oks_before']:.3f} -> {r['oks_after']:.3f} |")
    mean_b = sum(r["ap_before"] for r in rows) / len(rows)
    mean_a = sum(r["ap_after"] for r in rows) / len(rows)
    lines.append(f"| all | mean of the {len(rows)} inputs | | {mean_b:.3f} | {mean_a:.3f} | "
                 f"{mean_a - mean_b:+.3f} | |")
    lines += ["", "Keypoint errors (Ronchi & Perona taxonomy), before -> after:", "",
              "| part | input | good | jitter | inversion | swap | miss |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [f"{r['errors_before'].get(t, 0)} -> {r['errors_after'].get(t, 0)}"
                 for t in ("good", "jitter", "inversion", "swap", "miss")]
        lines.append(f"| {r['part']} | {r['estimator']} | " + " | ".join(cells) + " |")
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
        checkpoint = default_checkpoint_path()
    elif not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    sample = sample_dir()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for part, folder in SAMPLE_PARTS.items():
        root = sample / folder
        gt = root / "annotations.json"
        for name, file in SAMPLE_ESTIMATORS.items():
            refined = out / part / f"refined_{name}.json"
            refined.parent.mkdir(parents=True, exist_ok=True)
            summary = refine_files(
                checkpoint=checkpoint, images=root, results=root / file, out=refined, gt=gt,
                workers=workers, progress=False)
            visualize_files(
                images=root, out=out / "pictures" / part / name, gt=gt,
                results=[f"{name} (input)={root / file}", f"refined={refined}"],
                max_images=_PICTURES_PER_INPUT)
            rows.append({
                "part": part,
                "estimator": name,
                "refined": str(refined),
                "persons": summary["matched_before"],
                "ap_before": summary["ap_before"]["AP"],
                "ap_after": summary["ap_after"]["AP"],
                "oks_before": summary["mean_oks_before"],
                "oks_after": summary["mean_oks_after"],
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
