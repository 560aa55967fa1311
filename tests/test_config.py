"""Typed configs: built-ins, overrides, and errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from posefix.config import (
    Config,
    ConfigError,
    available_configs,
    config_from_dict,
    config_to_dict,
    load_config,
    override_config,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["r50_256x192", "r50_384x288", "r152_256x192", "r152_384x288"]


def test_builtin_configs_load() -> None:
    names = available_configs()
    assert set(RECIPES + ["tiny_cpu"]) <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        assert isinstance(cfg.model.input_size, tuple) and len(cfg.model.input_size) == 2
        assert cfg.data.train, name


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_follow_the_paper(name: str) -> None:
    cfg = load_config(name)
    backbone, size = name.split("_")
    h, w = (int(v) for v in size.split("x"))
    assert cfg.model.backbone == {"r50": "resnet50", "r152": "resnet152"}[backbone]
    assert cfg.model.input_size == (h, w)
    o = cfg.optim
    assert (o.lr, o.epochs, o.lr_steps, o.lr_factor, o.batch_size) == \
        (5e-4, 140, (90, 120), 0.1, 32)
    assert cfg.data.train[0].ann.endswith("person_keypoints_train2017.json")
    assert (cfg.data.bbox_padding, cfg.data.scale_factor, cfg.data.rotation_factor,
            cfg.data.rotation_prob, cfg.data.flip) == (1.25, 0.3, 40.0, 0.6, True)


def test_tiny_cpu_points_at_the_shared_data_from_the_repo_root() -> None:
    cfg = load_config("tiny_cpu")
    assert cfg.model.backbone == "resnet18"
    assert cfg.optim.max_steps is not None
    for ds in [*cfg.data.train, *cfg.data.val]:
        assert ds.ann.startswith("../shared/data/"), ds.ann
        # tests/data holds a copy of these sets (the tests train on it)
        assert (REPO / "tests" / "data" / ds.ann.removeprefix("../shared/data/")).is_file()
        if (REPO.parent / "shared").is_dir():
            assert (REPO / ds.ann).is_file(), ds.ann


def test_overrides_are_typed() -> None:
    cfg = load_config("tiny_cpu", ["optim.lr=1e-3", "model.input_size=[128,96]",
                                   "data.flip=false", "optim.max_steps=null", "run.seed=7",
                                   "optim.lr_steps=[3, 5]", "model.error_blend_keypoints."
                                   "left_wrist=0", "model.error_blend_keypoints.nose=0.5"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.model.input_size == (128, 96)
    assert cfg.data.flip is False
    assert cfg.optim.max_steps is None
    assert cfg.run.seed == 7
    assert cfg.optim.lr_steps == (3, 5)
    assert cfg.model.error_blend_keypoints == {"left_wrist": 0.0, "nose": 0.5}
    assert isinstance(cfg.model.error_blend_keypoints["left_wrist"], float)


@pytest.mark.parametrize("override, key", [
    ("optim.lrr=1", "optim.lrr"),
    ("modle.backbone=resnet18", "modle"),
    ("optim.batch_size=abc", "optim.batch_size"),
    ("optim.batch_size=2.5", "optim.batch_size"),
    ("data.flip=3", "data.flip"),
    ("model.input_size=[1,2,3]", "model.input_size"),
    ("optim.amp_dtype=half", "optim.amp_dtype"),
    ("optim.accumulate=0", "optim.accumulate"),
    ("run.log=wandb", "run.log"),
    ("data.rotation_prob=1.5", "data.rotation_prob"),
    ("data.train=[{ann: a.json, bogus: 1}]", "data.train[0].bogus"),
    ("data.train=[{images: x}]", "data.train[0]"),
    ("model.error_blend_keypoints=[0.1]", "model.error_blend_keypoints"),
    ("model.error_blend_keypoints={wrist: x}", "model.error_blend_keypoints.wrist"),
])
def test_bad_keys_and_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("tiny_cpu", [override])
    assert key in str(e.value)


def test_override_config_applies_overrides_to_a_loaded_config() -> None:
    cfg = load_config("tiny_cpu")
    out = override_config(cfg, ["model.error_blend=0.5", "model.error_blend_keypoints.nose=0"])
    assert out.model.error_blend == 0.5 and out.model.error_blend_keypoints == {"nose": 0.0}
    assert out.data == cfg.data and cfg.model.error_blend == 0.0  # the input is not changed
    with pytest.raises(ConfigError, match="model.error_blend: must be in"):
        override_config(cfg, ["model.error_blend=2"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        override_config(cfg, ["model.error_blend"])


def test_override_needs_equals_sign() -> None:
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr"])


def test_unknown_config_name() -> None:
    with pytest.raises(ConfigError, match="no_such_config"):
        load_config("no_such_config")


def test_file_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "ann.json").write_text("{}")
    f = tmp_path / "cfg.yaml"
    f.write_text("data:\n  train:\n    - ann: ann.json\n      images: missing_dir\n"
                 "optim:\n  lr: 1e-4\n")
    cfg = load_config(f)
    assert cfg.data.train[0].ann == str(tmp_path / "ann.json")
    assert cfg.data.train[0].images == "missing_dir"  # kept as given: it does not exist there
    assert cfg.optim.lr == pytest.approx(1e-4)


def test_bad_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(f)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_dict_round_trip() -> None:
    cfg = load_config("r50_256x192", ["data.train=[{ann: a.json, image_files: [x.jpg]}]",
                                      "model.error_blend_keypoints={left_wrist: 0.1}"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert config_to_dict(again)["model"]["input_size"] == [256, 192]
