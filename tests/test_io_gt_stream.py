"""Ground truth read as a stream: the same arrays, images, spec and errors as the whole file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from posefix import groundtruth
from posefix.errors import InputError
from posefix.groundtruth import WholeFile
from posefix.io import GroundTruth, load_ground_truth
from posefix.spec import load_spec

GT_FILES = ["coco/test_coco.json", "ochuman/test_ochuman.json", "crowdpose/test_crowdpose.json",
            "aic/test_aic.json", "posetrack18/annotations/test_posetrack18_val.json"]
ORDERS = [("info", "licenses", "images", "annotations", "categories"),  # COCO's own
          ("categories", "annotations", "images", "info"),
          ("annotations", "licenses", "categories", "info", "images")]
FORMATS = [{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False, "indent": "\t"}]


def same_parse(a: tuple, b: tuple) -> None:
    """Two (spec, images, arrays) results are equal to the last bit, dtypes and shapes too."""
    assert a[0] == b[0] and a[1] == b[1]
    for x, y in zip(a[2], b[2], strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def same_truth(a: GroundTruth, b: GroundTruth) -> None:
    same_parse((a.spec, a.images, (a.image_ids, a.ann_ids, a.keypoints, a.boxes, a.areas,
                                   a.iscrowd)),
               (b.spec, b.images, (b.image_ids, b.ann_ids, b.keypoints, b.boxes, b.areas,
                                   b.iscrowd)))
    assert (a.path, a.image_root) == (b.path, b.image_root)


def whole_file_load(monkeypatch: pytest.MonkeyPatch, *args, **kw) -> GroundTruth:
    """``load_ground_truth`` as before streaming: the whole file parsed at once."""
    with monkeypatch.context() as m:
        m.setattr(groundtruth, "_stream_ground_truth", lambda *a, **k: WholeFile("a test"))
        return load_ground_truth(*args, **kw)


def outcome(fn, *args, **kw) -> object:
    """What a call returns, or the type and message of what it raises."""
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - compared, whatever it is
        return type(e), str(e)


@pytest.mark.parametrize("block", [7, 300, 1 << 22])
def test_every_ground_truth_file_streams_to_the_whole_files_arrays(
        data_dir: Path, block: int) -> None:
    for rel in GT_FILES:
        path = data_dir / rel
        streamed = groundtruth._stream_ground_truth(path, None, block)
        assert not isinstance(streamed, WholeFile), rel  # streamed, not handed to the whole-file path
        same_parse(streamed, groundtruth._whole_ground_truth(path, None))


def test_shared_lsp_and_parse_stream_to_the_whole_files_arrays(shared_data: Path) -> None:
    for rel in ["lsp/coco17.json", "lsp/lsp14.json", "parse/coco17.json", "parse/parse14.json"]:
        path = shared_data / rel
        for block in (1 << 12, 1 << 22):
            streamed = groundtruth._stream_ground_truth(path, None, block)
            assert not isinstance(streamed, WholeFile), rel
            same_parse(streamed, groundtruth._whole_ground_truth(path, None))


def tricky_ground_truth(rng: np.random.Generator, order: tuple[str, ...]) -> dict:
    """A COCO-17 file with what could fool a block parser or the chunking: brackets and
    braces in strings, unicode, nested objects, RLE and polygon masks, crowd persons, other
    categories (some without keypoints), persons without bbox, area or id, a split field."""
    spec = load_spec("coco17")
    images = [{"id": i, "file_name": f"é€ {i} }}], [{{\".jpg", "width": 640, "height": 480,
               "split": "test" if i % 3 else "train", "meta": {"tags": [{"a": "},"}]}}
              for i in range(1, 31)]
    anns = []
    for j in range(150):
        kp = np.round(rng.uniform(0, 600, (17, 3)), int(rng.integers(0, 3)))
        kp[:, 2] = rng.integers(0, 3, 17)
        a = {"image_id": int(rng.integers(1, 31)), "category_id": 1, "id": 10_000 + j,
             "keypoints": [int(v) if j % 2 else float(v) for v in kp.reshape(-1)],
             "num_keypoints": int((kp[:, 2] > 0).sum()),
             "segmentation": [[float(v) for v in rng.uniform(0, 600, 8)]],
             "bbox": [float(v) for v in rng.uniform(1, 300, 4)], "area": float(j) + 0.5,
             "note": 'x"}, {"id": 1}, ]} ' + "😀" * (j % 3), "attrs": {"deep": [{"y": j}]}}
        if j % 7 == 0:
            a["iscrowd"] = 1
            a["segmentation"] = {"counts": [int(c) for c in rng.integers(0, 99, 20)],
                                 "size": [480, 640]}
        if j % 5 == 1:
            del a["bbox"]
        if j % 6 == 2:
            del a["area"]
        if j % 11 == 3:
            del a["id"]  # the default id: the person's place among persons, counted from 1
            a["note"] = "no id"
        if j % 13 == 4:
            a = {"image_id": 999, "category_id": 2, "bbox": [1, 2, 3, 4]}  # not a person
        anns.append(a)
    cats = [{"id": 1, "name": "person", "keypoints": list(spec.keypoints),
             "skeleton": [[i + 1, k + 1] for i, k in spec.skeleton]},
            {"id": 2, "name": "dog, }, {"}]
    parts = {"info": {"description": "}], [{\"", "year": 2017},
             "licenses": [{"id": 1, "name": "x},{"}, {"id": 2}], "images": images,
             "annotations": anns, "categories": cats}
    return {k: parts[k] for k in order}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("block", [7, 256, 1 << 22])
def test_tricky_files_in_any_key_order_and_layout_stream_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: tuple, block: int) -> None:
    data = tricky_ground_truth(np.random.default_rng(block), order)
    for i, kw in enumerate(FORMATS):
        path = tmp_path / f"gt{i}.json"
        path.write_text(" \n" + json.dumps(data, **kw) + "\n", encoding="utf-8")
        streamed = groundtruth._stream_ground_truth(path, None, block)
        assert not isinstance(streamed, WholeFile)
        same_parse(streamed, groundtruth._whole_ground_truth(path, None))
        assert len(streamed[2][0]) == sum(a.get("category_id") == 1
                                          for a in data["annotations"])
    gt = load_ground_truth(path, split="test")
    assert {im.split for im in gt.images.values()} == {"test"} and gt.iscrowd.any()
    same_truth(gt, whole_file_load(monkeypatch, path, split="test"))
    same_truth(load_ground_truth(path, "coco17"), whole_file_load(monkeypatch, path, "coco17"))


def test_no_person_and_a_repeated_key_read_as_the_whole_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tricky_ground_truth(np.random.default_rng(0), ORDERS[0])
    path = tmp_path / "gt.json"
    empty = dict(data, annotations=[])
    path.write_text(json.dumps(empty))
    assert not isinstance(groundtruth._stream_ground_truth(path, None), WholeFile)
    gt = load_ground_truth(path)
    assert len(gt) == 0 and gt.keypoints.shape == (0, 17, 3)
    same_truth(gt, whole_file_load(monkeypatch, path))
    text = json.dumps(data)  # a second "annotations": JSON keeps the last
    path.write_text(text[:-1] + ', "annotations": ' + json.dumps(data["annotations"][:3]) + "}")
    gt = load_ground_truth(path)
    assert len(gt) == 3
    same_truth(gt, whole_file_load(monkeypatch, path))


def _break(data: dict, case: str) -> dict | str:
    """``data`` with one fault (or the text of a broken file)."""
    anns, first = data["annotations"], data["annotations"][1]
    if case == "short keypoints":
        anns[40]["keypoints"] = anns[40]["keypoints"][:-3]
    elif case == "unknown image":
        anns[60]["image_id"] = 4242
    elif case == "no keypoints":
        del anns[90]["keypoints"]
    elif case == "bbox text":
        anns[100]["bbox"] = [1, "2", 3, 4]
    elif case == "keypoint text":
        anns[2]["keypoints"][4] = "5"
    elif case == "not an object":
        anns[70] = 5
    elif case == "image without file name":
        del data["images"][7]["file_name"]
    elif case == "annotations not a list":
        data["annotations"] = {"0": first}
    elif case == "no images":
        del data["images"]
    elif case == "no spec":
        del data["categories"][0]["keypoints"]
    elif case == "14 keypoints":
        for a in anns:
            if "keypoints" in a:
                a["keypoints"] = a["keypoints"][:42]
    elif case == "truncated":
        return json.dumps(data)[:-5000]
    elif case == "results file":
        return json.dumps([{"image_id": 1, "keypoints": [1, 2, 1] * 17, "score": 1}])
    return data


@pytest.mark.parametrize("case", [
    "short keypoints", "unknown image", "no keypoints", "bbox text", "keypoint text",
    "not an object", "image without file name", "annotations not a list", "no images",
    "no spec", "14 keypoints", "truncated", "results file"])
@pytest.mark.parametrize("order", ORDERS[:2])
def test_faults_raise_what_the_whole_file_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, order: tuple) -> None:
    broken = _break(tricky_ground_truth(np.random.default_rng(1), order), case)
    path = tmp_path / "bad.json"
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken, indent=1))
    got = outcome(load_ground_truth, path)
    assert isinstance(got, tuple) and got == outcome(whole_file_load, monkeypatch, path)
    streamed = outcome(groundtruth._stream_ground_truth, path, None, 64)
    assert isinstance(streamed, WholeFile) or len(streamed) == 2  # refused or raised
    if got[0] is InputError:
        assert got[1].startswith(str(path))
    if case in ("short keypoints", "bbox text", "image without file name"):
        field = {"short keypoints": "keypoints", "bbox text": "bbox",
                 "image without file name": "images.file_name"}[case]
        assert f"field '{field}'" in got[1] and "entry " in got[1]
    got17 = outcome(load_ground_truth, path, "coco17")  # a spec given: no inference
    whole17 = outcome(whole_file_load, monkeypatch, path, "coco17")
    if isinstance(got17, GroundTruth):
        same_truth(got17, whole17)
    else:
        assert got17 == whole17


def test_mpii_list_form_loads_as_before(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = data_dir / "mpii" / "test_mpii.json"
    assert isinstance(groundtruth._stream_ground_truth(path, None), WholeFile)  # a list
    same_truth(load_ground_truth(path), whole_file_load(monkeypatch, path))


def test_the_whole_file_is_read_only_on_a_named_logged_reason(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="posefix.groundtruth"):
        load_ground_truth(data_dir / "coco" / "test_coco.json")
        assert not caplog.records  # streamed: nothing to say
        path = data_dir / "mpii" / "test_mpii.json"
        load_ground_truth(path)
    [record] = caplog.records
    assert record.getMessage() == (f"{path}: read whole, not as a stream: not a JSON object "
                                   "(the MPII list form?)")


def test_a_fault_of_the_stream_itself_is_raised_not_retried_whole(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a bug in the fast path must show as an error, never only as a slower second parse
    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug in the stream")

    monkeypatch.setattr(groundtruth, "person_chunks", broken)
    monkeypatch.setattr(groundtruth, "_whole_ground_truth", broken)
    path = data_dir / "coco" / "test_coco.json"
    with pytest.raises(InputError, match="a bug in the stream"):
        load_ground_truth(path)
    monkeypatch.setattr(groundtruth, "_whole_ground_truth", lambda *a: pytest.fail("re-read"))
    with pytest.raises(InputError, match=r"malformed content \(TypeError: a bug in the stream"):
        load_ground_truth(path)
