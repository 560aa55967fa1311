"""The ``posefix`` command: one thin function per verb; the work lives in the modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

from .argtypes import (
    MAX_WORKERS,
    check_device,
    device_type,
    finite_float,
    float_range,
    int_range,
)
from .backends import BACKENDS, require_torch, torch_missing
from .config import ConfigError, GateOverride
from .options import (
    BOXES,
    EXIF,
    SCORES,
    AnalyzeOptions,
    EvaluateOptions,
    RefineFileOptions,
    RefineOptions,
    RefinePaths,
    SynthesizeOptions,
    VisualizeOptions,
)

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line: ``posefix VERB: error: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (where it has one) and keeps the example's layout."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _verb(sub: argparse._SubParsersAction, name: str, summary: str, example: str,
          notes: str = "") -> argparse.ArgumentParser:
    """A verb's parser: ``summary`` is its one-line description; the help page ends with
    ``notes`` and the example."""
    epilog = (notes + "\n\n" if notes else "") + "example:\n  " + example
    return sub.add_parser(name, help=summary, description=summary + ".", epilog=epilog,
                          formatter_class=_HelpFormatter)

def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2))


def _add_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default=None, metavar="NAME",
                   help="only the --gt images whose 'split' field is NAME (e.g. LSP's test)")


def _add_format(p: argparse.ArgumentParser, what: str = "--results") -> None:
    from .formats import FORMATS

    p.add_argument("--format", default=None, choices=list(FORMATS),
                   help=f"format of {what}, as posefix refine reads them (COCO results, "
                        "mmpose, OpenPose file or folder, arrays; default: detected)")


# --------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "evaluate", "COCO keypoint AP/AR of a results file (pycocotools' numbers)",
              "posefix evaluate --gt $(posefix sample)/annotations.json \\\n"
              "      --results $(posefix sample)/blazepose.json")
    p.add_argument("--gt", required=True, help="COCO keypoint annotation JSON")
    p.add_argument("--results", required=True,
                   help="the poses: COCO results, mmpose or OpenPose JSON (or a folder of "
                        "per-image files), or per-image arrays (see --format)")
    _add_format(p)
    p.add_argument("--spec", default=None, help="keypoint spec name or file (default: from --gt)")
    p.add_argument("--strict", action="store_true", help="unknown image ids are an error")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_split(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .commands.evaluate import evaluate_files
    from .evaluate import format_stats

    stats = evaluate_files(a.gt, a.results, EvaluateOptions(
        spec=a.spec, strict=a.strict, split=a.split, format=a.format))
    _print_json(stats) if a.json else print(format_stats(stats))
    return 0


# --------------------------------------------------------------------------- analyze
def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "analyze", "Error diagnosis (Ronchi & Perona) of a results file",
              "posefix analyze --gt $(posefix sample)/annotations.json \\\n"
              "      --results $(posefix sample)/blazepose.json --report analysis/")
    p.add_argument("--gt", required=True, help="COCO keypoint annotation JSON")
    p.add_argument("--results", required=True,
                   help="the poses: COCO results, mmpose or OpenPose JSON (or a folder of "
                        "per-image files), or per-image arrays (see --format)")
    _add_format(p)
    p.add_argument("--spec", default=None, help="keypoint spec name or file (default: from --gt)")
    p.add_argument("--strict", action="store_true", help="unknown image ids are an error")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--fit-profile", default=None, metavar="OUT",
                   help="also fit an error profile to these results and write it to OUT")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write figures, report.md and index.html into DIR")
    _add_split(p)
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(a: argparse.Namespace) -> int:
    from .commands.analyze import analyze_files
    from .diagnosis import format_report

    report = analyze_files(a.gt, a.results, AnalyzeOptions(
        spec=a.spec, strict=a.strict, split=a.split, format=a.format,
        fit_profile_out=a.fit_profile, report_dir=a.report))
    _print_json(report) if a.json else print(format_report(report))
    return 0


# --------------------------------------------------------------------------- synthesize
def _add_synthesize(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "synthesize", "Write synthetic input poses made from ground truth",
              "posefix synthesize --gt $(posefix sample)/annotations.json --out synth.json "
              "--seed 1")
    p.add_argument("--gt", required=True, help="COCO keypoint annotation JSON")
    p.add_argument("--out", required=True, help="output COCO results JSON")
    p.add_argument("--spec", default=None, help="keypoint spec name or file (default: from --gt)")
    p.add_argument("--profile", default=SynthesizeOptions.default("profile"),
                   help="error profile name or file")
    p.add_argument("--seed", type=int_range(0), default=SynthesizeOptions.default("seed"),
                   help="random seed, an integer >= 0 (same seed, same file)")
    p.add_argument("--trainset-results", default=None,
                   help="an estimator's results on --gt, for unlabelled keypoints")
    p.set_defaults(func=_cmd_synthesize)


def _cmd_synthesize(a: argparse.Namespace) -> int:
    from .commands.synthesize import synthesize_file

    out = synthesize_file(a.gt, a.out, SynthesizeOptions(
        spec=a.spec, profile=a.profile, seed=a.seed, trainset_results=a.trainset_results))
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "train", "Train a refiner (one process; use torchrun for many)",
              "posefix train tiny_cpu run.out_dir=runs/tiny optim.max_steps=100",
              notes=_builtin_configs())
    p.add_argument("config", help="config file or built-in config name")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--resume", default="auto",
                   help="'auto' (latest checkpoint in out_dir), a checkpoint path, or 'no'")
    p.set_defaults(func=_cmd_train)


def _builtin_configs() -> str:
    """The built-in configs, one a line with the first line of its comment."""
    from importlib import resources

    from .config import available_configs

    lines = ["built-in configs (or give a YAML file of your own):"]
    for name in available_configs():
        text = resources.files("posefix").joinpath(f"configs/{name}.yaml").read_text()
        first = text.splitlines()[0].lstrip("# ").rstrip(",:") if text.startswith("#") else ""
        lines.append(f"  {name:<14} {first}".rstrip())
    return "\n".join(lines)


def _cmd_train(a: argparse.Namespace) -> int:
    from .config import load_config
    from .train import train

    train(load_config(a.config, a.overrides), resume=a.resume)
    return 0


# --------------------------------------------------------------------------- refine
def _add_refine(sub: argparse._SubParsersAction) -> None:
    from .formats import FORMATS

    default = RefineOptions.default

    p = _verb(sub, "refine", "Refine any estimator's poses (COCO results, mmpose, OpenPose, arrays)",
              "posefix refine --images $(posefix sample) --gt $(posefix sample)/annotations.json \\\n"
              "      --results $(posefix sample)/movenet.json --out refined.json")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (default: the demo model)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", help="image folder")
    where.add_argument("--video", default=None,
                       help="a video instead: --results keyed by frame index (0, 1, ...); "
                            "frames are streamed with OpenCV and refined one by one (no "
                            "temporal model)")
    p.add_argument("--results", required=True,
                   help="the estimator's poses: COCO results, mmpose or OpenPose JSON (or a "
                        "folder of per-image files), or per-image arrays (see --format)")
    p.add_argument("--format", default=None, choices=list(FORMATS),
                   help="format of --results (default: detected)")
    p.add_argument("--out", required=True, help="output COCO keypoint results JSON")
    p.add_argument("--out-format", default="coco", choices=["coco", "arrays"],
                   help="write COCO results (default) or per-image arrays keyed as the input's "
                        "images ({image: {keypoints, scores}})")
    p.add_argument("--gt", default=None, help="annotations: report AP and errors before/after")
    p.add_argument("--image-list", default=None,
                   help="COCO annotation or image-info JSON mapping image ids to file names "
                        "(default: --gt; one of the two is required)")
    p.add_argument("--box", choices=list(BOXES), default=default("box"),
                   help="crop from the input pose's extent or from the detection's bbox")
    p.add_argument("--no-flip", action="store_true", help="disable the flip test")
    p.add_argument("--score", choices=list(SCORES), default=default("score"),
                   help="output person score: 'input' keeps the estimator's; 'heatmap': input "
                        "score x mean keypoint confidence of the refined pose; 'quality': input "
                        "score x mean probability (error head) that the input keypoints are "
                        "right; 'auto': quality where the network has an error head, else "
                        "input (default: the checkpoint's decoding, auto)")
    p.add_argument("--nms", type=float_range(0, 1), default=default("nms"),
                   help="OKS-NMS threshold in [0, 1]: a pose whose OKS with a higher-scoring "
                        "pose of its image exceeds it is dropped; 0 disables NMS (and 1 "
                        "drops nothing: OKS never exceeds 1; default: the checkpoint's "
                        "decoding, 0.9)")
    p.add_argument("--batch-size", type=int_range(1, 1 << 16), default=default("batch_size"),
                   help="crops per network call, 1 to 65536")
    p.add_argument("--workers", type=int_range(0, MAX_WORKERS), default=default("workers"),
                   help=f"image-reading threads, 0 to {MAX_WORKERS} (0: in the main thread)")
    p.add_argument("--device", type=device_type, default="auto",
                   help="'cpu', 'cuda', 'cuda:1', ... or 'auto' (one this machine has)")
    p.add_argument("--backend", choices=list(BACKENDS), default="auto",
                   help="auto: ONNX Runtime on a CPU (the checkpoint exported once and "
                        "cached; int8 where the shipped calibration set fits the model), "
                        "PyTorch on CUDA; torch: the exact float32 PyTorch path; "
                        "onnxruntime: float32 ONNX Runtime (--onnx FILE, or the checkpoint's "
                        "export); onnxruntime-int8: the export's int8 copy")
    p.add_argument("--onnx", default=None, help="ONNX model for --backend onnxruntime")
    p.add_argument("--skip-missing", action="store_true",
                   help="keep (unrefined) and count detections whose image is missing or "
                        "unreadable, instead of stopping")
    p.add_argument("--exif", choices=list(EXIF), default=default("exif"),
                   help="EXIF orientation: 'auto' uses the frame whose size the image list "
                        "gives (else applies it)")
    p.add_argument("--strict", action="store_true", help="unknown image ids are an error")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="with --gt: write before/after figures, report.md and index.html "
                        "into DIR")
    p.add_argument("--error-gate", type=float_range(0, 1), default=None, metavar="P",
                   help="keep each input keypoint unless the network's probability that it is "
                        "a gross error is at least P, in [0, 1] (0: refine every keypoint; "
                        "default: the checkpoint's model.error_gate)")
    _add_error_blend(p)
    _add_split(p)
    p.set_defaults(func=_cmd_refine)


def _refine_options(a: argparse.Namespace) -> RefineFileOptions:
    """The refine command's options, as given."""
    refine = RefineOptions(box=a.box, flip=not a.no_flip, score=a.score, nms=a.nms,
                           batch_size=a.batch_size, workers=a.workers, device=a.device,
                           exif=a.exif, skip_missing=a.skip_missing)
    return RefineFileOptions(refine=refine, backend=a.backend, onnx=a.onnx,
                             error_gate=_gate(a), format=a.format, strict=a.strict,
                             split=a.split, out_format=a.out_format)


def _add_error_blend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--error-blend", type=float_range(0, 1), default=None, metavar="W",
                   help="move each input keypoint the error gate keeps W of the way to the "
                        "refined one, in [0, 1] (0: keep it exactly; default: the "
                        "checkpoint's model.error_blend, per keypoint)")


def _gate(a: argparse.Namespace) -> GateOverride | None:
    """--error-gate and --error-blend as one override (None: the checkpoint's; a value out
    of range is a ConfigError, one line from main)."""
    if a.error_gate is None and a.error_blend is None:
        return None
    return GateOverride(a.error_gate, a.error_blend)


def _cmd_refine(a: argparse.Namespace) -> int:
    from .commands.preflight import check_refine_inputs
    from .errors import InputError

    if a.device.startswith("cuda"):
        require_torch(f"--device {a.device}")  # a lean install: the install command, not "no GPU"
    reason = check_device(a.device)
    if reason is not None:
        raise InputError("--device", reason)
    options = _refine_options(a)
    checked = paths = None
    if a.video:
        for flag, value in (("--gt", a.gt), ("--image-list", a.image_list),
                            ("--report", a.report), ("--split", a.split)):
            if value is not None:
                raise InputError(a.video, f"{flag} does not apply to --video (frames are "
                                 "images 0, 1, ...)")
    else:  # the input files first: importing torch and loading the model take seconds
        paths = RefinePaths(a.results, a.out, a.images, a.gt, a.image_list, a.checkpoint,
                            a.report)
        checked = check_refine_inputs(paths, options)
    from .commands.refine import refine_paths, refine_video_file

    summary = (refine_video_file(a.checkpoint, a.video, a.results, a.out, options) if a.video
               else refine_paths(paths, options, checked))
    _print_json(summary) if a.json else print(summary.get("text", ""))
    if "report" in summary and not a.json:
        print(f"report written to {summary['report']}")
    return 0


# --------------------------------------------------------------------------- visualize
def _add_visualize(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "visualize", "Draw ground truth, input and refined poses side by side",
              "posefix visualize --images $(posefix sample) --gt $(posefix sample)/annotations.json \\\n"
              "      --results input=$(posefix sample)/movenet.json --results refined=refined.json \\\n"
              "      --out pictures/")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", help="image folder")
    where.add_argument("--video", default=None,
                       help="a video instead (results keyed by frame index): --out is the "
                            "side-by-side video to write (.mp4, .avi)")
    p.add_argument("--out", required=True, help="output folder for PNG files (a video file "
                   "with --video)")
    p.add_argument("--gt", default=None, help="annotations (drawn, and image ids -> files)")
    p.add_argument("--results", action="append", default=None, metavar="[LABEL=]FILE",
                   help="poses to draw, in any format posefix refine reads (see --format); "
                        "repeat for side-by-side panels")
    _add_format(p, "every --results")
    p.add_argument("--spec", default=None, help="keypoint spec (default: from --gt, or coco17)")
    p.add_argument("--min-score", type=finite_float,
                   default=VisualizeOptions.default("min_score"),
                   help="hide detections scoring less")
    p.add_argument("--max-images", type=int_range(1), default=None,
                   help="draw at most this many images (frames with --video), >= 1")
    p.add_argument("--max-side", type=int_range(_MIN_SIDE, 1 << 15, zero="full size"),
                   default=VisualizeOptions.default("max_side"),
                   help=f"longer side of each panel in pixels, {_MIN_SIDE} to 32768 (0: full "
                        "size)")
    p.add_argument("--exif", choices=list(EXIF), default=VisualizeOptions.default("exif"),
                   help="EXIF orientation (as posefix refine)")
    p.set_defaults(func=_cmd_visualize)


_MIN_SIDE = 32  # the smallest panel that still shows a pose


def _cmd_visualize(a: argparse.Namespace) -> int:
    from .commands.visualize import visualize_files, visualize_video

    options = VisualizeOptions(results=tuple(a.results or ()), spec=a.spec,
                               min_score=a.min_score, max_images=a.max_images,
                               max_side=a.max_side or None, exif=a.exif, format=a.format)
    if a.video:
        out = visualize_video(a.video, a.out, options)
        print(f"wrote {out}")
        return 0

    written = visualize_files(a.images, a.out, replace(options, gt=a.gt))
    print(f"wrote {len(written)} image(s) to {a.out}")
    return 0


# --------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "export", "Export a checkpoint's network to ONNX",
              "posefix export --onnx refiner.onnx   # the shipped model; then\n"
              "  posefix refine --backend onnxruntime --onnx refiner.onnx --images ... "
              "--results ... --out ...")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (default: demo model)")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int_range(11, 30), default=17,
                   help="ONNX opset version, 11 to 30")
    p.add_argument("--error-gate", type=float_range(0, 1), default=None, metavar="P",
                   help="the error gate the file's decoding carries, in [0, 1] (default: the "
                        "checkpoint's; refine --error-gate changes it again)")
    _add_error_blend(p)
    p.add_argument("--int8", action="store_true",
                   help="write the int8 copy that the default backend runs (calibrated on the "
                        "set shipped with the package: 128x96 COCO-17 models)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(a: argparse.Namespace) -> int:
    from .commands.export import export_file

    out = export_file(a.checkpoint, a.onnx, opset=a.opset, error_gate=_gate(a),
                      int8=a.int8)
    print(f"wrote {out}{' (int8)' if a.int8 else ''}")
    return 0


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "demo", "Refine the embedded sample with the shipped model and report",
              "posefix demo --out my-demo   # then read my-demo/report.md")
    p.add_argument("--out", default="posefix-demo", help="output folder")
    p.add_argument("--checkpoint", default=None,
                   help="a trained checkpoint (default: the model shipped in the package)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    from .commands.demo import run_demo

    run_demo(out=a.out, checkpoint=a.checkpoint)
    return 0


# --------------------------------------------------------------------------- sample
def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = _verb(sub, "sample", "Print the folder of the sample embedded in the package",
              "posefix sample   # .../site-packages/posefix/assets/sample\n"
              "  posefix evaluate --gt $(posefix sample)/annotations.json "
              "--results $(posefix sample)/blazepose.json",
              notes="The folder holds images, their annotations.json and real estimators' "
                    "results on them\n(blazepose.json, movenet.json); lsp/ holds LSP test "
                    "images in the same form.")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(a: argparse.Namespace) -> int:
    from .commands.demo import sample_dir

    print(sample_dir())
    return 0


_VERBS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_evaluate, _add_analyze, _add_synthesize, _add_train, _add_refine, _add_visualize,
    _add_export, _add_demo, _add_sample,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``posefix`` command."""
    from . import __version__

    parser = _Parser(
        prog="posefix", description="Model-agnostic human pose refinement (PoseFix).")
    parser.add_argument("--version", action="version", version=f"posefix {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in _VERBS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the verb, turn input errors into one clear line (and Ctrl-C,
    while parsing too, into one line and exit 130)."""
    verb = "posefix"
    try:
        args = build_parser().parse_args(argv)
        verb = f"posefix {args.verb}"
        return _run(args, verb)
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, none is half
        print(f"{verb}: interrupted (nothing half-written is left)", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, verb: str) -> int:
    """Run the parsed verb; its input errors are one line and exit 2."""
    from .errors import InputError
    from .spec import SpecError

    def one_line(message: Warning | str, *_: object, **__: object) -> None:
        print(f"{verb}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        try:
            return int(args.func(args) or 0)
        except (InputError, SpecError, ConfigError, FileNotFoundError, FileExistsError) as e:
            print(f"{verb}: error: {e}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as e:  # a lean install (no torch) asked to train, export...
            if e.name not in ("torch", "torchvision"):
                raise
            print(f"posefix {args.verb}: error: {torch_missing(e)}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `posefix evaluate ... | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
            return 0


if __name__ == "__main__":
    sys.exit(main())
