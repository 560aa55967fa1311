"""What a user meets first: the help pages, one-line warnings, and ``refine`` refusing bad
input before it loads torch and the model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from posefix.cli import build_parser, main
from posefix.config import available_configs

REPO = Path(__file__).resolve().parents[1]
POSEFIX = Path(sys.executable).parent / "posefix"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(POSEFIX), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def _verbs() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help(verb: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


VERBS = ["evaluate", "analyze", "synthesize", "train", "refine", "visualize", "export", "demo",
         "sample"]


def test_every_verb_is_listed() -> None:
    assert sorted(_verbs()) == sorted(VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_help_has_a_description_an_example_and_defaults(
        verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(verb, capsys)
    parser = _verbs()[verb]
    assert parser.description and len(parser.description.strip().splitlines()) == 1
    assert parser.description.strip() in text
    assert f"example:\n  posefix {verb}" in text.lower(), text
    flat = " ".join(text.split())
    for action in parser._actions:  # every option with a real default shows it
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                and action.help != argparse.SUPPRESS:
            assert f"(default: {action.default})" in flat, (action.dest, flat)


@pytest.mark.parametrize("verb,shown", [
    ("refine", "0 disables NMS (and 1 drops nothing: OKS never exceeds 1; default: the "
               "checkpoint's decoding, 0.9)"),
    ("visualize", "(default: 640)"),
    ("export", "--opset OPSET ONNX opset version, 11 to 30 (default: 17)"),
    ("demo", "(default: posefix-demo)"),
])
def test_named_defaults_are_shown(verb: str, shown: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert shown in " ".join(_help(verb, capsys).split())


def test_train_help_lists_the_builtin_configs(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("train", capsys)
    assert available_configs()
    for name in available_configs():
        assert f"  {name}" in text, name


def test_sample_prints_the_embedded_sample_folder() -> None:
    out = run("sample")
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert (folder / "annotations.json").is_file() and (folder / "blazepose.json").is_file()
    # the README's examples, literally
    for verb in ("evaluate", "analyze"):
        r = run(verb, "--gt", folder / "annotations.json", "--results", folder / "blazepose.json")
        assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize("verb", ["evaluate", "analyze"])
def test_empty_results_get_a_one_line_warning(verb: str, coco_dir: Path,
                                              tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = run(verb, "--gt", coco_dir / "test_coco.json", "--results", empty)
    assert out.returncode == 0
    assert out.stderr == (f"posefix {verb}: warning: {empty}: no detections "
                          "(an empty results list)\n")


def _refine_in_process(tmp_path: Path, *args: str | Path) -> tuple[int, bool, str]:
    """(exit status, whether torch was imported, stderr) of ``posefix refine ARGS``."""
    code = ("import sys, json\nfrom posefix.cli import main\n"
            "rc = main(json.loads(sys.argv[1]))\n"
            "print(json.dumps([rc, 'torch' in sys.modules]))\n")
    argv = json.dumps(["refine", *map(str, args)])
    p = subprocess.run([sys.executable, "-c", code, argv], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    rc, torch_loaded = json.loads(p.stdout.strip().splitlines()[-1])
    return rc, torch_loaded, p.stderr


def test_refine_checks_its_inputs_before_loading_torch(coco_dir: Path, tmp_path: Path) -> None:
    gt = coco_dir / "test_coco.json"
    nested = tmp_path / "nested.json"
    entry = {"image_id": 785, "category_id": 1, "score": 1.0, "keypoints": [[1, 2, 2]] * 17}
    nested.write_text(json.dumps([entry]))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 785,')
    dup = json.loads(gt.read_text())
    dup["annotations"][1]["id"] = dup["annotations"][0]["id"]
    dup_gt = tmp_path / "dup.json"
    dup_gt.write_text(json.dumps(dup))
    good = coco_dir / "blazepose_gtboxes.json"
    out = tmp_path / "out.json"
    cases = [  # (arguments, the file the error names)
        (["--results", nested, "--gt", gt], nested),
        (["--results", broken, "--gt", gt], broken),
        (["--results", tmp_path / "nope.json", "--gt", gt], tmp_path / "nope.json"),
        (["--results", good, "--gt", dup_gt], dup_gt),
        (["--results", good, "--image-list", tmp_path / "none.json"], tmp_path / "none.json"),
        (["--results", good, "--gt", gt, "--checkpoint", tmp_path / "no.pt"], tmp_path / "no.pt"),
    ]
    for args, named in cases:
        rc, torch_loaded, err = _refine_in_process(tmp_path, "--images", coco_dir, "--out",
                                                   out, *args)
        assert rc == 2 and not torch_loaded, (args, err)
        assert err.startswith(f"posefix refine: error: {named}") and err.count("\n") == 1, err
        assert not out.exists()


def test_refine_of_an_empty_results_file_warns_once(coco_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "out.json"
    r = run("refine", "--images", coco_dir, "--gt", coco_dir / "test_coco.json", "--results",
            empty, "--out", out, "--workers", "0", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f"posefix refine: warning: {empty}: no detections "
                        "(an empty results list)\n")
    assert json.loads(out.read_text()) == []


def test_output_into_a_closed_pipe_is_not_an_error(coco_dir: Path) -> None:
    """``posefix evaluate ... | head``: a reader that has gone is no traceback."""
    cmd = (f"'{POSEFIX}' evaluate --gt '{coco_dir / 'test_coco.json'}' "
           f"--results '{coco_dir / 'blazepose_gtboxes.json'}' | true")  # reader gone first
    r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
