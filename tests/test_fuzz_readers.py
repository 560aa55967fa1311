"""Every reader, given random and mutated files, reads them or raises ``InputError``: never
another exception, never a numpy overflow warning (property-based, ``hypothesis``).

Each test starts from a valid file of its format (the sample's ground truth and COCO
results, small mmpose, OpenPose, arrays and MPII files), mutates its parsed JSON (a value
replaced by a hostile one, a key dropped, a list emptied or grown) or its bytes, writes it
and reads it. ``POSEFIX_FUZZ_EXAMPLES`` sets the examples per reader (default 100, for CI;
the recorded run in benchmarks/RESULTS.md used 2,000:
``benchmarks/fuzz_readers.py``).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from posefix.errors import InputError  # noqa: E402
from posefix.formats import read_poses, sniff_format  # noqa: E402
from posefix.images import load_image_list  # noqa: E402
from posefix.io import convert_mpii, load_ground_truth, load_results  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "posefix" / "assets" / "sample"
EXAMPLES = int(os.environ.get("POSEFIX_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
K = 17


def _gt() -> dict[str, Any]:
    data = json.loads((SAMPLE / "annotations.json").read_text())
    for a in data["annotations"]:
        a.pop("segmentation", None)
    return data


def _pose(n: int = K) -> list[list[float]]:
    return [[10.0 + i, 20.0 + 2 * i] for i in range(n)]


SEEDS: dict[str, Any] = {
    "gt": _gt(),
    "coco": json.loads((SAMPLE / "blazepose.json").read_text()),
    "mmpose": [{"keypoints": _pose(), "keypoint_scores": [0.9] * K,
                "bbox": [[1.0, 2.0, 50.0, 80.0]], "bbox_score": 0.8}],
    "mmpose_video": [{"frame_id": 0, "instances": [
        {"keypoints": _pose(), "keypoint_scores": [0.5] * K}]}],
    "mmpose_predictions": {"predictions": [[{"keypoints": _pose(),
                                             "keypoint_scores": [0.7] * K}]]},
    "openpose": {"version": 1.3, "people": [
        {"pose_keypoints_2d": [v for i in range(25) for v in (5.0 + i, 7.0 + i, 0.8)]}]},
    "arrays": {"000000040083.jpg": [[[1.0, 2.0, 0.5]] * K],
               "000000196141": {"keypoints": [[[3.0, 4.0]] * K], "scores": [0.9]}},
    "mpii": [{"image": "a.jpg", "joints": [[1.0 + i, 2.0] for i in range(16)],
              "joints_vis": [1] * 16, "center": [5.0, 6.0], "scale": 1.2}],
}

#: Values that broke or could break a reader: wrong types, ids as strings, overflow.
HOSTILE = st.one_of(
    st.sampled_from(["1803", "wide", "", "NaN", None, True, False, [], {}, [[]], 1e308,
                     -1e308, -1, 0, 2 ** 64, -(2 ** 70), 1e-320, 0.5, [1e308] * 3,
                     [None] * 51, {"x": 1}, [[1, 2, 3]] * 17, "\u0000", "../../etc/passwd"]),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=60),
    st.lists(st.integers(-5, 5), max_size=60),
)


def _paths(obj: Any, at: tuple = ()) -> list[tuple]:
    """Every place in a parsed JSON value (the root included)."""
    out = [at]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*at, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):  # the first entries: enough places to break
            out += _paths(v, (*at, i))
    return out


def _mutate(obj: Any, data: st.DataObject) -> Any:
    """One hostile change at one drawn place of ``obj`` (a copy)."""
    obj = copy.deepcopy(obj)
    at = data.draw(st.sampled_from(_paths(obj)))
    kind = data.draw(st.sampled_from(["replace", "replace", "replace", "drop", "grow", "empty"]))
    if not at:
        return data.draw(HOSTILE) if kind == "replace" else obj
    parent = obj
    for step in at[:-1]:
        parent = parent[step]
    key = at[-1]
    if kind == "replace":
        parent[key] = data.draw(HOSTILE)
    elif kind == "drop":
        del parent[key]
    elif kind == "grow" and isinstance(parent[key], list):
        parent[key] = parent[key] + parent[key][:1] * data.draw(st.integers(1, 3))
    elif kind == "empty" and isinstance(parent[key], (list, dict)):
        parent[key] = type(parent[key])()
    return obj


def _text(obj: Any, data: st.DataObject) -> bytes:
    """``obj`` as JSON (NaN allowed, as Python writes it), sometimes with some bytes
    flipped, cut or inserted."""
    raw = json.dumps(obj).encode()
    how = data.draw(st.sampled_from(["as is", "as is", "as is", "flip", "cut", "insert"]))
    if how == "as is" or not raw:
        return raw
    i = data.draw(st.integers(0, len(raw) - 1))
    if how == "flip":
        return raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1:]
    if how == "cut":
        return raw[:i]
    return raw[:i] + data.draw(st.binary(min_size=1, max_size=8)) + raw[i:]


def _check(read: Callable[[Path], Any], content: bytes, name: str = "input.json") -> None:
    """``read(file)`` returns or raises InputError; no numpy overflow warning."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reader's own warnings (e.g. no detections)
            warnings.simplefilter("error", RuntimeWarning)  # overflow, invalid value
            try:
                read(path)
            except InputError:
                pass


def _fuzz(seed: str, read: Callable[[Path], Any], name: str = "input.json"
          ) -> Callable[[st.DataObject], None]:
    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        obj = SEEDS[seed]
        for _ in range(data.draw(st.integers(1, 3))):
            obj = _mutate(obj, data)
        _check(read, _text(obj, data), name)

    return run


test_ground_truth = _fuzz("gt", lambda p: load_ground_truth(p))
test_ground_truth_given_spec = _fuzz("gt", lambda p: load_ground_truth(p, spec="coco17"))
test_image_list = _fuzz("gt", load_image_list)
test_coco_results = _fuzz("coco", lambda p: load_results(p, "coco17"))
test_coco_results_any_layout = _fuzz("coco", lambda p: load_results(p, None))
test_poses_coco = _fuzz("coco", lambda p: read_poses(p, "coco17"))
test_poses_mmpose = _fuzz("mmpose", lambda p: read_poses(p, "coco17", "mmpose"))
test_poses_mmpose_video = _fuzz("mmpose_video", lambda p: read_poses(p, "coco17"))
test_poses_mmpose_predictions = _fuzz("mmpose_predictions",
                                      lambda p: read_poses(p, "coco17"))
test_poses_openpose = _fuzz("openpose", lambda p: read_poses(p, "coco17"),
                            "img_keypoints.json")
test_poses_arrays = _fuzz("arrays", lambda p: read_poses(p, "coco17", "arrays"))
test_poses_detected = _fuzz("arrays", lambda p: (sniff_format(p), read_poses(p, "coco17")))
test_mpii = _fuzz("mpii", lambda p: convert_mpii(p))
test_mpii_ground_truth = _fuzz("mpii", lambda p: load_ground_truth(p))


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(content: bytes) -> None:
    for read in (lambda p: load_ground_truth(p), lambda p: load_results(p, "coco17"),
                 lambda p: read_poses(p, "coco17"), load_image_list):
        _check(read, content)


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=30))
def test_random_json(obj: Any) -> None:
    content = json.dumps(obj).encode()
    for read in (lambda p: load_ground_truth(p), lambda p: load_results(p, None),
                 lambda p: read_poses(p, "coco17"), load_image_list):
        _check(read, content)
