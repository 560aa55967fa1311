"""Reading and validating annotations and results: every bad input names file, entry, field."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from posefix.errors import InputError
from posefix.io import (
    Detections,
    convert_mpii,
    keep_known,
    load_ground_truth,
    load_results,
    resolve_image_path,
)
from posefix.jsonfiles import write_json_atomic
from posefix.spec import load_spec

SPEC = load_spec("coco17")
GOOD_ENTRY = {"image_id": 785, "category_id": 1, "keypoints": [1.0, 2.0, 0.5] * 17,
              "score": 0.9}


def results_file(tmp_path: Path, entries: object, text: str | None = None) -> Path:
    path = tmp_path / "results.json"
    path.write_text(text if text is not None else json.dumps(entries))
    return path


def bad_entry(tmp_path: Path, index: int = 2, **change: object) -> Path:
    """A results file whose entry ``index`` has the given fields changed (None deletes)."""
    entries = [dict(GOOD_ENTRY) for _ in range(4)]
    for k, v in change.items():
        if v is None:
            del entries[index][k]
        else:
            entries[index][k] = v
    return results_file(tmp_path, entries)


def assert_names(err: pytest.ExceptionInfo, path: Path, index: int | None,
                 field: str | None, words: str) -> None:
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    if index is not None:
        assert f"entry {index}" in msg and err.value.index == index
    if field is not None:
        assert f"field '{field}'" in msg and err.value.field == field
    assert words in msg, msg


def test_good_results_load(tmp_path: Path) -> None:
    dets = load_results(bad_entry(tmp_path), SPEC)
    assert len(dets) == 4 and dets.keypoints.shape == (4, 17, 3)
    assert np.isnan(dets.boxes).all()


def test_wrong_keypoint_count_for_the_spec(tmp_path: Path) -> None:
    path = bad_entry(tmp_path, keypoints=[1.0, 2.0, 0.5] * 14)
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 2, "keypoints", "has 42 values; spec coco17 needs 51")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_keypoint(tmp_path: Path, value: float) -> None:
    path = bad_entry(tmp_path, keypoints=[1.0, 2.0, 0.5] * 16 + [value, 2.0, 0.5])
    assert "NaN" in path.read_text() or "Infinity" in path.read_text()
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 2, "keypoints", "NaN or infinite")


def test_non_numeric_keypoint(tmp_path: Path) -> None:
    path = bad_entry(tmp_path, 1, keypoints=["1.0", 2.0, 0.5] + [1.0, 2.0, 0.5] * 16)
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 1, "keypoints", "non-numeric")


def test_keypoints_not_a_list(tmp_path: Path) -> None:
    path = bad_entry(tmp_path, 0, keypoints={"x": 1})
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 0, "keypoints", "must be a list of numbers")


def test_negative_score(tmp_path: Path) -> None:
    path = bad_entry(tmp_path, 3, score=-0.1)
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 3, "score", "must not be negative")


@pytest.mark.parametrize("score", ["0.9", True, float("nan")])
def test_non_numeric_or_nan_score(tmp_path: Path, score: object) -> None:
    path = bad_entry(tmp_path, 1, score=score)
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 1, "score", "must be a finite number")


@pytest.mark.parametrize("field", ["score", "keypoints", "image_id"])
def test_missing_field(tmp_path: Path, field: str) -> None:
    path = bad_entry(tmp_path, 2, **{field: None})
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 2, field, "missing")


def test_bad_image_id_and_bbox(tmp_path: Path) -> None:
    path = bad_entry(tmp_path, 1, image_id="abc")
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 1, "image_id", "must be an integer")
    path = bad_entry(tmp_path, 2, bbox=[1.0, 2.0, 3.0])
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 2, "bbox", "must have 4 values")


def test_unknown_image_id_is_counted_and_skipped_or_an_error_with_strict(
        tmp_path: Path) -> None:
    entries = [dict(GOOD_ENTRY) for _ in range(5)]
    entries[1]["image_id"] = 1
    entries[3]["image_id"] = 2
    path = results_file(tmp_path, entries)
    with pytest.warns(UserWarning, match="skipped 2 detection"):
        dets = load_results(path, SPEC, image_ids=[785])
    assert len(dets) == 3 and (dets.image_ids == 785).all()
    with pytest.raises(InputError) as e:
        load_results(path, SPEC, image_ids=[785], strict=True)
    assert_names(e, path, 1, "image_id", "unknown image_id 1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_results(path, SPEC)) == 5  # no known ids given: nothing skipped


def test_keep_known_checks_results_already_read_as_load_results_does(tmp_path: Path) -> None:
    # refine reuses the preflight's parse: the same rows, warnings and errors as reading
    # the file again with the known ids
    entries = [dict(GOOD_ENTRY, score=0.1 * i) for i in range(6)]
    entries[1]["image_id"] = 1
    entries[4]["image_id"] = 2
    path = results_file(tmp_path, entries)
    every = load_results(path, None)
    for ids in ([785], [785, 1, 2], None):
        with warnings.catch_warnings(record=True) as a:
            warnings.simplefilter("always")
            want = load_results(path, SPEC, image_ids=ids)
        with warnings.catch_warnings(record=True) as b:
            warnings.simplefilter("always")
            got = keep_known(every, path, ids)
        assert [str(w.message) for w in b] == [str(w.message) for w in a]
        for f in ("image_ids", "keypoints", "scores", "boxes", "category_ids"):
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
        assert got is not every and len(got) == (4 if ids == [785] else 6)
    with pytest.raises(InputError) as e:
        keep_known(every, path, [785], strict=True)
    assert_names(e, path, 1, "image_id", "unknown image_id 1")
    empty = results_file(tmp_path, [])
    with pytest.warns(UserWarning, match="no detections"):
        assert len(keep_known(Detections.empty(17), empty, [785])) == 0


def test_empty_file(tmp_path: Path) -> None:
    path = results_file(tmp_path, None, text="  \n")
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, None, None, "file is empty")


def test_not_json(tmp_path: Path) -> None:
    path = results_file(tmp_path, None, text='[{"image_id": 1,')
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, None, None, "not valid JSON")
    assert e.value.__cause__ is None


def test_not_a_list_or_not_objects(tmp_path: Path) -> None:
    path = results_file(tmp_path, {"annotations": []})
    with pytest.raises(InputError, match="JSON list of detections"):
        load_results(path, SPEC)
    path = results_file(tmp_path, [GOOD_ENTRY, 3])
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 1, None, "must be an object")


def test_empty_results_list(tmp_path: Path) -> None:
    path = results_file(tmp_path, [])
    with pytest.warns(UserWarning) as caught:
        dets = load_results(path, SPEC)
    assert len(dets) == 0 and dets.keypoints.shape == (0, 17, 3)
    [w] = caught
    assert str(w.message) == f"{path}: no detections (an empty results list)"


def test_nested_keypoints_say_the_expected_shape(tmp_path: Path) -> None:
    path = bad_entry(tmp_path, 1, keypoints=[[1.0, 2.0, 2.0]] * 17)
    with pytest.raises(InputError) as e:
        load_results(path, SPEC)
    assert_names(e, path, 1, "keypoints",
                 "must be a flat list of 51 numbers (17 keypoints x 3: x, y, score), "
                 "not a list of lists")


def test_duplicate_annotation_id_is_an_error(coco_dir: Path, tmp_path: Path) -> None:
    data = json.loads((coco_dir / "test_coco.json").read_text())
    data["annotations"][7]["id"] = data["annotations"][3]["id"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_ground_truth(path)
    assert_names(e, path, 7, "id", f"duplicate annotation id {data['annotations'][3]['id']} "
                 "(also entry 3)")


def test_ground_truth_errors_name_the_annotation(coco_dir: Path, tmp_path: Path) -> None:
    data = json.loads((coco_dir / "test_coco.json").read_text())
    data["annotations"][5]["keypoints"] = data["annotations"][5]["keypoints"][:-3]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_ground_truth(path)
    assert_names(e, path, 5, "keypoints", "has 48 values")
    data = json.loads((coco_dir / "test_coco.json").read_text())
    data["annotations"][2]["image_id"] = 42
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_ground_truth(path)
    assert_names(e, path, 2, "image_id", "unknown image_id 42")
    del data["categories"][0]["keypoints"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        load_ground_truth(path)
    assert_names(e, path, None, "categories", "cannot infer the keypoint spec")


def test_file_name_escaping_the_image_root(coco_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        resolve_image_path(coco_dir, "../coco/../../etc/passwd", source="gt.json")
    assert_names(e, Path("gt.json"), None, "file_name", "escapes the image root")
    with pytest.raises(InputError, match="escapes"):
        resolve_image_path(coco_dir, "/etc/passwd")
    data = json.loads((coco_dir / "test_coco.json").read_text())
    data["images"][0]["file_name"] = "../mpii/004645041.jpg"  # exists, but outside the root
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    gt = load_ground_truth(path, image_root=coco_dir)
    with pytest.raises(InputError) as e:
        gt.image_path(data["images"][0]["id"])
    assert_names(e, path, None, "file_name", "escapes the image root")


def test_image_that_does_not_exist(coco_dir: Path) -> None:
    with pytest.raises(InputError) as e:
        resolve_image_path(coco_dir, "000000999999.jpg", source="gt.json")
    assert_names(e, Path("gt.json"), None, "file_name", "does not exist")
    assert resolve_image_path(coco_dir, "000000999999.jpg", must_exist=False).name \
        == "000000999999.jpg"
    assert resolve_image_path(coco_dir, "000000000785.jpg").is_file()


def test_load_every_shared_dataset(data_dir: Path) -> None:
    cases = {  # file -> (spec, images, annotations)
        "coco/test_coco.json": ("coco17", 4, 14),
        "ochuman/test_ochuman.json": ("coco17", 3, 5),
        "crowdpose/test_crowdpose.json": ("crowdpose14", 2, 5),
        "aic/test_aic.json": ("aic14", 3, 9),
        "posetrack18/annotations/test_posetrack18_val.json": ("posetrack17", 3, 14),
    }
    for rel, (spec, n_img, n_ann) in cases.items():
        gt = load_ground_truth(data_dir / rel)
        assert gt.spec.name == spec and len(gt.images) == n_img and len(gt) == n_ann, rel
        raw = json.loads((data_dir / rel).read_text())
        n_kp = [a["num_keypoints"] for a in raw["annotations"]]
        if spec == "crowdpose14":  # its num_keypoints leaves out head and neck
            assert (gt.num_labelled - (gt.keypoints[:, 12:, 2] > 0).sum(1)).tolist() == n_kp
        else:
            assert gt.num_labelled.tolist() == n_kp, rel
        for img in gt.images:  # every image exists under the guessed root
            assert gt.image_path(img).is_file()
        with_area = ["area" in a for a in raw["annotations"]]
        if not all(with_area):  # no 'area' in the file: the box area
            np.testing.assert_allclose(gt.areas, gt.boxes[:, 2] * gt.boxes[:, 3])
    pt = load_ground_truth(data_dir / "posetrack18/annotations/test_posetrack18_val.json")
    assert pt.image_root == data_dir / "posetrack18"  # names are relative to it
    assert (pt.keypoints[:, [3, 4], 2] == 0).all()  # ears ignored
    dets = load_results(data_dir / "coco" / "blazepose_detboxes.json", "coco17")
    assert len(dets) == 21 and (dets.scores >= 0).all()


def test_results_round_trip(coco_dir: Path, tmp_path: Path) -> None:
    dets = load_results(coco_dir / "movenet_multipose.json", "coco17")
    dets.boxes[0] = [1, 2, 3, 4]
    path = write_json_atomic(tmp_path / "r.json", dets.to_json())
    again = load_results(path, "coco17")
    np.testing.assert_allclose(again.keypoints, dets.keypoints, atol=5e-5)
    np.testing.assert_array_equal(again.scores, dets.scores)
    np.testing.assert_array_equal(again.boxes[0], [1, 2, 3, 4])
    assert np.isnan(again.boxes[1:]).all()
    both = Detections.concatenate([dets, again], 17)
    assert len(both) == 2 * len(dets) and len(both.select(both.scores > 0.5)) > 0


def test_convert_mpii(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "mpii" / "test_mpii.json"
    raw = json.loads(src.read_text())
    coco = convert_mpii(src)
    assert len(coco["annotations"]) == len(raw) == 5 and len(coco["images"]) == 5
    for ann, entry in zip(coco["annotations"], raw, strict=True):
        kp = np.array(ann["keypoints"]).reshape(16, 3)
        vis = np.array(entry["joints_vis"]) > 0
        np.testing.assert_allclose(kp[vis, :2], np.array(entry["joints"])[vis])
        assert ann["num_keypoints"] == vis.sum() and (kp[~vis] == 0).all()
        x, y, w, h = ann["bbox"]
        assert (kp[vis, 0] >= x - 1e-9).all() and (kp[vis, 0] <= x + w + 1e-9).all()
        assert ann["area"] == pytest.approx(w * h)
    assert all(im["width"] > 0 and im["height"] > 0 for im in coco["images"])
    path = write_json_atomic(tmp_path / "mpii_coco.json", coco)
    gt = load_ground_truth(path, image_root=src.parent)
    assert gt.spec.name == "mpii16" and len(gt) == 5
    assert all(gt.image_path(i).is_file() for i in gt.images)
    direct = load_ground_truth(src)  # the list form itself loads, converted on the fly
    assert direct.spec.name == "mpii16" and len(direct) == 5
    np.testing.assert_array_equal(direct.keypoints, gt.keypoints)
    assert all(direct.image_path(i).is_file() for i in direct.images)
    bad = tmp_path / "bad_mpii.json"
    raw[3]["joints"] = raw[3]["joints"][:15]
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError) as e:
        convert_mpii(bad)
    assert_names(e, bad, 3, "joints", "spec needs 16")


def test_load_ground_truth_split(shared_data: Path) -> None:
    path = shared_data / "lsp" / "coco17.json"
    whole = load_ground_truth(path)
    test = load_ground_truth(path, split="test")
    train = load_ground_truth(path, split="train")
    assert (len(whole.images), len(test.images), len(train.images)) == (1800, 800, 1000)
    assert {im.split for im in test.images.values()} == {"test"}
    assert set(test.image_ids.tolist()) == set(test.images) and len(test) == 800
    assert sorted(test.ann_ids.tolist() + train.ann_ids.tolist()) == sorted(whole.ann_ids)
    with pytest.raises(InputError, match="no image has split 'val'.*test, train"):
        load_ground_truth(path, split="val")


def test_write_results_parses_to_the_values_of_the_json_writer(tmp_path: Path) -> None:
    from posefix.io import write_results
    rng = np.random.default_rng(1)
    n = 9000  # more than one chunk
    kp = rng.uniform(-5, 700, (n, 17, 3))
    kp[0, :5, 0] = [0.1, 1e-7, 123.456789, 2 ** 40 + 0.5, 7e-5]
    boxes = np.where(rng.random((n, 1)) < 0.5, rng.uniform(0, 500, (n, 4)), np.nan)
    scores = rng.random(n)
    scores[:4] = [0.1, 1e-7, 123.456789, 0.0]
    dets = Detections(rng.integers(0, 2 ** 62, n), kp, scores, boxes,
                      np.ones(n, dtype=np.int64))
    dets.image_ids[:2] = [2 ** 63 - 1, 0]
    before = []  # the writer of before issue 22: json.dump of Python-rounded floats
    for r in range(n):
        e = {"image_id": int(dets.image_ids[r]), "category_id": 1,
             "keypoints": [round(float(v), 4) for v in kp[r].reshape(-1)],
             "score": float(scores[r])}
        if np.isfinite(boxes[r]).all():
            e["bbox"] = [round(float(v), 4) for v in boxes[r]]
        before.append(e)
    path = write_results(tmp_path / "r.json", dets)
    got = json.loads(path.read_text())
    assert got == before and dets.to_json() == before
    assert [type(v) for v in got[0].values()] == [type(v) for v in before[0].values()]
    again = load_results(path, "coco17")
    np.testing.assert_array_equal(again.image_ids, dets.image_ids)
    np.testing.assert_array_equal(again.scores, dets.scores)
    dets.keypoints[5, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_results(tmp_path / "nan.json", dets)
    assert not (tmp_path / "nan.json").exists()
