"""The verbs' options objects: validated once, the command line's defaults, and the older
keyword call form mapped onto them (issue 30)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from pathlib import Path

import pytest

from posefix.cli import build_parser
from posefix.commands.analyze import analyze_files
from posefix.commands.evaluate import evaluate_files
from posefix.commands.synthesize import synthesize_file
from posefix.options import (
    AnalyzeOptions,
    EvaluateOptions,
    SynthesizeOptions,
    VisualizeOptions,
    with_overrides,
)

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "posefix" / "assets" / "sample"


def _verb(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("change", [
    (SynthesizeOptions, {"seed": -1}), (SynthesizeOptions, {"seed": 1.5}),
    (SynthesizeOptions, {"iou": 1.5}), (VisualizeOptions, {"min_score": math.nan}),
    (VisualizeOptions, {"max_images": 0}), (VisualizeOptions, {"max_side": 0}),
    (VisualizeOptions, {"exif": "rotate"}), (VisualizeOptions, {"results": "a.json"}),
])
def test_options_are_validated_once_when_made(change: tuple[type, dict]) -> None:
    cls, values = change
    with pytest.raises(ValueError):
        cls(**values)
    with pytest.raises(ValueError):  # the keyword form goes through the same check
        with_overrides(cls, None, values)


def test_with_overrides_replaces_named_fields_and_refuses_unknown_ones() -> None:
    base = AnalyzeOptions(strict=True, report_dir="r")
    assert with_overrides(AnalyzeOptions, base, {}) is base
    assert with_overrides(AnalyzeOptions, None, {}) == AnalyzeOptions()
    assert with_overrides(AnalyzeOptions, base, {"split": "val"}) == AnalyzeOptions(
        strict=True, report_dir="r", split="val")
    with pytest.raises(TypeError):
        with_overrides(EvaluateOptions, None, {"fit_profile_out": "p.yaml"})
    assert VisualizeOptions(results=["a=x.json"]).results == ("a=x.json",)


@pytest.mark.parametrize(("verb", "cls", "names"), [
    ("synthesize", SynthesizeOptions, {"spec": "spec", "profile": "profile", "seed": "seed",
                                       "trainset_results": "trainset_results"}),
    ("visualize", VisualizeOptions, {"spec": "spec", "min_score": "min_score",
                                     "max_images": "max_images", "max_side": "max_side",
                                     "exif": "exif", "format": "format"}),
    ("evaluate", EvaluateOptions, {"spec": "spec", "strict": "strict", "split": "split",
                                   "format": "format"}),
    ("analyze", AnalyzeOptions, {"spec": "spec", "strict": "strict", "split": "split",
                                 "format": "format", "fit_profile_out": "fit_profile",
                                 "report_dir": "report"}),
])
def test_command_line_defaults_are_the_options_defaults(verb: str, cls: type,
                                                        names: dict[str, str]) -> None:
    defaults = {a.dest: a.default for a in _verb(verb)._actions}
    for field in fields(cls):
        if field.name in names:
            assert defaults[names[field.name]] == field.default, field.name


def test_options_object_and_keywords_give_the_same_result(tmp_path: Path) -> None:
    gt, res = SAMPLE / "annotations.json", SAMPLE / "movenet.json"
    assert evaluate_files(gt, res, EvaluateOptions(strict=True)) == evaluate_files(
        gt, res, strict=True)
    a = synthesize_file(gt, tmp_path / "a.json", SynthesizeOptions(seed=3))
    b = synthesize_file(gt, tmp_path / "b.json", seed=3)
    c = synthesize_file(gt, tmp_path / "c.json", SynthesizeOptions(seed=4))
    assert json.loads(a.read_text()) == json.loads(b.read_text()) != json.loads(c.read_text())
    report = analyze_files(gt, res, AnalyzeOptions(report_dir=tmp_path / "report"))
    assert Path(report["report"]).is_file() and report["gt"] == str(gt)
