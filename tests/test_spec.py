"""Keypoint specs: built-ins, flip symmetry, name mapping, malformed spec files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from posefix.spec import KeypointSpec, SpecError, available_specs, convert_layout, load_spec

BUILTIN = ["aic14", "body25", "coco17", "crowdpose14", "lsp14", "mpii16", "ochuman17",
           "openpose18", "parse14", "posetrack17"]


def test_every_builtin_spec_loads() -> None:
    assert available_specs() == BUILTIN
    sizes = {"aic14": 14, "coco17": 17, "crowdpose14": 14, "mpii16": 16, "ochuman17": 17,
             "posetrack17": 17, "lsp14": 14, "parse14": 14, "body25": 25, "openpose18": 18}
    for name in BUILTIN:
        spec = load_spec(name)
        assert spec.name == name and spec.num_keypoints == sizes[name]
        assert spec.sigma_array.shape == (spec.num_keypoints,) and (spec.sigma_array > 0).all()
        grouped = sorted(i for idx in spec.groups.values() for i in idx)
        assert grouped == list(range(spec.num_keypoints))  # every keypoint in one group
        assert set(spec.group_of) <= set(spec.groups)


@pytest.mark.parametrize("name", BUILTIN)
def test_flip_index_is_an_involution_swapping_left_and_right(name: str) -> None:
    spec = load_spec(name)
    flip = spec.flip_index
    np.testing.assert_array_equal(flip[flip], np.arange(spec.num_keypoints))
    for i, j in enumerate(flip):
        a, b = spec.keypoints[i], spec.keypoints[j]
        if "left" in a or "right" in a:
            assert b == a.replace("left", "#").replace("right", "left").replace("#", "right")
        else:
            assert i == j
    partner = spec.partner_index
    has = partner >= 0
    np.testing.assert_array_equal(partner[partner[has]], np.flatnonzero(has))
    np.testing.assert_array_equal(np.where(has, partner, np.arange(len(flip))), flip)
    if name != "aic14":  # AI Challenger's official sigmas were measured per side
        np.testing.assert_array_equal(spec.sigma_array[flip], spec.sigma_array)


def test_aliases_and_posetrack_ignores_the_ears() -> None:
    assert load_spec("coco") == load_spec("coco17")
    assert load_spec("PoseTrack18") == load_spec("posetrack17")
    pt = load_spec("posetrack")
    assert [pt.keypoints[i] for i in pt.ignore] == ["left_ear", "right_ear"]
    assert pt.used_mask.sum() == 15 and not pt.used_mask[[3, 4]].any()
    assert load_spec(pt) is pt


def test_mapping_from() -> None:
    coco, crowd, pt = load_spec("coco17"), load_spec("crowdpose14"), load_spec("posetrack17")
    np.testing.assert_array_equal(load_spec("ochuman17").mapping_from(coco), np.arange(17))
    m = crowd.mapping_from(coco)
    assert m[crowd.index("left_shoulder")] == coco.index("left_shoulder") == 5
    assert m[crowd.index("head")] == -1 and m[crowd.index("neck")] == -1
    assert (m[:12] == np.arange(5, 17)).all()
    m = coco.mapping_from(pt)
    assert m[1] == -1 and m[2] == -1 and m[0] == 0 and (m[3:] == np.arange(3, 17)).all()


def test_convert_layout_zeroes_ignored_keypoints_only_when_asked() -> None:
    coco, track = load_spec("coco17"), load_spec("posetrack17")
    kp = np.arange(2 * 17 * 3, dtype=np.float64).reshape(2, 17, 3) + 1
    kept = convert_layout(kp, coco, track, zero_ignored=False)
    zeroed = convert_layout(kp, coco, track, zero_ignored=True)
    ears = [track.index("left_ear"), track.index("right_ear")]
    np.testing.assert_array_equal(kept[:, ears], kp[:, [coco.index("left_ear"),
                                                         coco.index("right_ear")]])
    assert not zeroed[:, ears].any()
    for name in ("head_bottom", "head_top"):  # not in COCO: absent either way
        assert not kept[:, track.index(name)].any() and not zeroed[:, track.index(name)].any()
    nose = track.index("nose")
    np.testing.assert_array_equal(zeroed[:, nose], kp[:, coco.index("nose")])
    assert convert_layout(kp[0], coco, track, zero_ignored=False).shape == (17, 3)


def test_dict_round_trip_and_index() -> None:
    spec = load_spec("mpii16")
    again = KeypointSpec.from_dict(spec.to_dict())
    assert again == spec and again.groups == spec.groups
    assert spec.index("head_top") == 9
    with pytest.raises(KeyError, match="nose"):
        spec.index("nose")


def write(tmp_path: Path, data: object, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


GOOD = {"name": "tiny", "keypoints": ["nose", "left_eye", "right_eye"],
        "flip_pairs": [["left_eye", "right_eye"]], "sigmas": [0.026, 0.025, 0.025]}


def test_a_user_spec_file_loads(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD, "tiny.yaml"))
    assert spec.keypoints == ("nose", "left_eye", "right_eye")
    np.testing.assert_array_equal(spec.flip_index, [0, 2, 1])
    assert spec.group_of == ("other", "other", "other")


@pytest.mark.parametrize("change,message", [
    ({"sigmas": [0.1, 0.1]}, "2 values for 3 keypoints"),
    ({"sigmas": [0.1, 0.0, 0.1]}, "positive"),
    ({"sigmas": "abc"}, "list of numbers"),
    ({"keypoints": ["nose", "nose", "eye"], "flip_pairs": []}, "duplicate"),
    ({"keypoints": [], "flip_pairs": [], "sigmas": []}, "empty"),
    ({"flip_pairs": [["left_eye", "left_ear"]]}, "unknown keypoint 'left_ear'"),
    ({"flip_pairs": [["left_eye", "right_eye"], ["left_eye", "nose"]]}, "reuses"),
    ({"flip_pairs": [[1, 7]]}, "out of range"),
    ({"flip_pairs": [["left_eye"]]}, "pairs"),
    ({"skeleton": [[0, 3]]}, "out of range"),
    ({"ignore": [5]}, "out of range"),
    ({"groups": {"face": ["mouth"]}}, "unknown keypoint 'mouth'"),
    ({"sigmas": None}, "sigmas"),
])
def test_bad_spec_files_raise_naming_the_file(tmp_path: Path, change: dict,
                                              message: str) -> None:
    data = {**GOOD, **change}
    if change.get("sigmas", 0) is None:
        del data["sigmas"]
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_spec_file_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    for text, message in (("name: [unclosed\n", "not valid YAML"),
                          ("- a\n- b\n", "must be a mapping")):
        path = write(tmp_path, text)
        with pytest.raises(SpecError) as e:
            load_spec(path)
        assert str(path) in str(e.value) and message in str(e.value)


def test_unknown_spec_name(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown keypoint spec 'coco18'"):
        load_spec("coco18")
    with pytest.raises(SpecError, match="not a file"):
        load_spec(tmp_path / "missing.yaml")


def test_lsp_and_parse_layouts_are_read_from_their_files_and_map_to_coco(
        shared_data: Path) -> None:
    from posefix.io import load_ground_truth

    coco = load_spec("coco17")
    for name, alias, path, extra in (
            ("lsp14", "lsp", "lsp/lsp14.json", ["neck", "head_top"]),
            ("parse14", "parse", "parse/parse14.json", ["head_bottom", "head_top"])):
        spec = load_spec(alias)
        assert spec.name == name and spec.num_keypoints == 14
        gt = load_ground_truth(shared_data / path)  # spec inferred from the categories
        assert gt.spec == spec
        m = coco.mapping_from(spec)
        shared = [coco.keypoints[i] for i in np.flatnonzero(m >= 0)]
        assert len(shared) == 12 and not any(n in shared for n in extra)
        assert all(coco.keypoints[i] == spec.keypoints[m[i]] for i in np.flatnonzero(m >= 0))
        assert set(coco.keypoints) - set(shared) == {"nose", "left_eye", "right_eye",
                                                     "left_ear", "right_ear"}
