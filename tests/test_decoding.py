"""posefix.decoding: the gate, steps and hold a Refiner applies to the network's outputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from posefix.config import ConfigError, GateOverride, ModelConfig
from posefix.decoding import Decoding

K = 5
REFINED = np.array([25.5, 33.5], dtype=np.float32)


def _pose() -> np.ndarray:
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.uniform(0, 40, (1, K, 2)), np.ones((1, K, 1))], -1)
    return pose.astype(np.float32)


def _outputs() -> tuple[np.ndarray, np.ndarray]:
    """Every network keypoint at REFINED, all confident."""
    return np.broadcast_to(REFINED, (1, K, 2)).copy(), np.ones((1, K), np.float32)


def test_the_gate_replaces_only_inputs_the_network_believes_wrong() -> None:
    coords, conf = _outputs()
    pose = _pose()
    pose[0, 4, 2] = 0  # an absent input keypoint is always refined
    error = np.array([[0.99, 0.01, 0.99, 0.01, 0.01]], np.float32)
    out = Decoding(gate=0.5).place(coords, conf, error, pose)
    for k, moved in enumerate([True, False, True, False, True]):
        np.testing.assert_array_equal(out[0, k], REFINED if moved else pose[0, k, :2])
    np.testing.assert_array_equal(Decoding().place(coords, conf, error, pose), coords)
    with pytest.raises(ValueError, match="no error head"):
        Decoding(gate=0.5).place(coords, conf, None, pose)


def test_a_keypoint_whose_error_probability_equals_the_gate_is_refined() -> None:
    """The convention: P(error) == gate refines."""
    coords, conf = _outputs()
    pose = _pose()
    error = np.array([[0.5, np.nextafter(np.float32(0.5), 0), np.nextafter(np.float32(0.5), 1),
                       0.0, 1.0]], np.float32)
    out = Decoding(gate=0.5).place(coords, conf, error, pose)
    for k, moved in enumerate([True, False, True, False, True]):
        np.testing.assert_array_equal(out[0, k], REFINED if moved else pose[0, k, :2])
    # a gate of 1 keeps every input short of certainty
    out = Decoding(gate=1.0).place(coords, conf, error, pose)
    np.testing.assert_array_equal(out[0, :4], pose[0, :4, :2])
    np.testing.assert_array_equal(out[0, 4], REFINED)


def test_steps_move_kept_keypoints_part_of_the_way_per_keypoint() -> None:
    coords, conf = _outputs()
    pose = _pose()
    error = np.array([[0.99, 0.01, 0.01, 0.01, 0.01]], np.float32)
    steps = (0.25, 0.25, 0.0, 0.5, 1.0)
    out = Decoding(gate=0.5, steps=steps).place(coords, conf, error, pose)
    for k, w in enumerate([1.0, 0.25, 0.0, 0.5, 1.0]):  # keypoint 0 is replaced
        np.testing.assert_allclose(out[0, k], pose[0, k, :2] + w * (REFINED - pose[0, k, :2]),
                                   rtol=1e-6)
    one = Decoding(gate=0.5, steps=(0.5,)).place(coords, conf, error, pose)
    np.testing.assert_allclose(one[0, 1:], pose[0, 1:, :2] + 0.5 * (REFINED - pose[0, 1:, :2]),
                               rtol=1e-6)


def test_hold_below_keeps_inputs_where_the_heatmap_has_no_evidence() -> None:
    coords, _ = _outputs()
    conf = np.array([[0.95, 0.95, 0.05, 0.05, 0.05]], np.float32)
    pose = _pose()
    pose[0, 4, 2] = 0  # an absent input keypoint is refined whatever its confidence
    out = Decoding(hold_below=0.5).place(coords, conf, None, pose)
    for k, held in enumerate([False, False, True, True, False]):
        np.testing.assert_array_equal(out[0, k], pose[0, k, :2] if held else REFINED)


def test_place_computes_in_float32_as_the_network_did() -> None:
    """The gate compares in float32, as ``torch.sigmoid(x) < gate`` did in the graph: a
    probability equal to the gate in float32 refines even where it comes as float64 and is
    below the float64 gate."""
    coords, conf = _outputs()
    pose = _pose()
    gate = 0.7
    p = float(np.float32(gate))  # 0.699999988...: below 0.7 in float64, equal in float32
    assert p < gate
    out = Decoding(gate=gate).place(coords, conf, np.full((1, K), p), pose)
    np.testing.assert_array_equal(out[0], np.broadcast_to(REFINED, (K, 2)))
    assert out.dtype == np.float32


def test_from_model_config_reads_the_checkpoints_decoding_by_keypoint_name() -> None:
    cfg = ModelConfig(error_head=True, error_gate=0.5, error_blend=0.25,
                      error_blend_keypoints={"b": 0.0}, move_min_confidence=0.2)
    d = Decoding.from_model_config(cfg, list("abcde"))
    assert d == Decoding(gate=0.5, steps=(0.25, 0.0, 0.25, 0.25, 0.25), hold_below=0.2)
    assert Decoding.from_model_config(ModelConfig(), list("ab")) == Decoding()
    assert Decoding.from_model_config(ModelConfig(error_head=True, error_gate=0.0)).gate is None
    with pytest.raises(ConfigError, match="error_blend_keypoints.*lacks \\(wrist\\)"):
        Decoding.from_model_config(ModelConfig(error_blend_keypoints={"wrist": 0.0}),
                                   list("abcde"))


def test_with_gate_changes_threshold_and_step_as_the_command_line_gives_them() -> None:
    d = Decoding(gate=0.5, steps=(0.25, 0.0))
    assert d.with_gate(None, 0.0) == Decoding(gate=0.5)  # the threshold stays, the step goes
    assert d.with_gate(0.9, 0.1) == Decoding(gate=0.9, steps=(0.1,))
    assert d.with_gate(0.3) == Decoding(gate=0.3, steps=(0.25, 0.0))  # a threshold alone
    assert d.with_gate(0.0).gate is None  # 0 refines every keypoint
    assert d.with_gate() is d
    with pytest.raises(ConfigError, match="error blend: must be in"):
        GateOverride(blend=1.5)


def test_changed_sets_flip_score_and_nms_and_validates() -> None:
    d = Decoding()
    assert d.changed() is d
    assert d.changed(flip=False, score="input", nms=-1) == Decoding(flip=False, score="input",
                                                                    nms=0.0)
    for bad in ({"gate": 0.0}, {"gate": 1.5}, {"steps": (1.5,)}, {"steps": ()},
                {"hold_below": -0.1}, {"score": "best"}, {"nms": 2.0}):
        with pytest.raises(ValueError):
            Decoding(**bad)


def test_json_round_trip_and_description() -> None:
    d = Decoding(gate=0.8, steps=(0.0, 0.25, 0.6), hold_below=0.1, flip=False, score="input",
                 nms=0.0)
    assert Decoding.from_json(d.to_json()) == d
    assert Decoding.from_json(Decoding().to_json()) == Decoding()
    assert d.describe() == ("gate 0.8, steps 0-0.6, hold below 0.1, no flip test, "
                            "score input, NMS off")
    with pytest.raises(ValueError, match="JSON object"):
        Decoding.from_json("[1, 2]")
    with pytest.raises(TypeError):
        Decoding.from_json('{"blend": 1}')
    assert dataclasses.replace(d, gate=None).describe().startswith("gate off")


def test_hold_above_shrink_keeps_persons_the_network_sees_coarser_than_the_estimator() -> None:
    coords, conf = _outputs()
    pose = np.concatenate([_pose(), _pose()])
    pose[1, 4, 2] = 0  # an absent input keypoint is refined whatever the person's size
    coords, conf = np.concatenate([coords, coords]), np.concatenate([conf, conf])
    d = Decoding(hold_above_shrink=2.0)
    out = d.place(coords, conf, None, pose, np.array([2.0, 2.5]))
    np.testing.assert_array_equal(out[0], coords[0])  # at the factor: refined
    np.testing.assert_array_equal(out[1, :4], pose[1, :4, :2])  # above it: held
    np.testing.assert_array_equal(out[1, 4], REFINED)
    np.testing.assert_array_equal(d.place(coords, conf, None, pose), coords)  # size unknown
    assert Decoding.from_model_config(ModelConfig(move_max_shrink=2.5)).hold_above_shrink == 2.5
    assert "hold above 2.5x shrink" in Decoding(hold_above_shrink=2.5).describe()
    with pytest.raises(ValueError, match="hold_above_shrink"):
        Decoding(hold_above_shrink=0.0)
    with pytest.raises(ConfigError, match="move_max_shrink"):
        ModelConfig(move_max_shrink=-1.0)
