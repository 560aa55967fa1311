"""Typed configuration: dataclasses loaded from YAML and overridden from the command line.

``load_config("configs/r50_256x192.yaml", ["optim.lr=1e-3", "model.backbone=resnet18"])``
returns a :class:`Config`; unknown keys and ill-typed values are errors that name the key.
Built-in configs (``posefix/configs/*.yaml``) can be named without a path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .builtin import builtin_names, read_yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetConfig",
    "GateOverride",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "available_configs",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "override_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid."""


@dataclass
class ModelConfig:
    """The PoseFix network (paper section 5.1)."""

    backbone: str = "resnet50"  # resnet18/34/50/101/152 or mobilenet_v2
    input_size: tuple[int, int] = (256, 192)  # (height, width) of the crop
    deconv_channels: int = 256
    num_deconv: int = 3
    input_sigma: float = 7.0  # Gaussian sigma in px of the input-pose heatmaps at 256x192
    pretrained: str | None = None  # local ImageNet state-dict file (torchvision layout; see README)
    # ResNet stages kept (1-4; the paper: 4). Fewer stages: a smaller receptive field and
    # output stride 2 ** (stages + 1), so fewer deconvolutions reach the heatmap stride
    backbone_stages: int = 4
    # posefix extension, off in the paper's recipes: add the log of a Gaussian prior around
    # the input pose (heatmaps.log_gaussian_prior), scaled by a learned per-keypoint weight
    # starting at this value (1.0: exactly the input-pose sigma), to the output logits, so
    # that a small model starts as the exact identity and learns corrections as evidence.
    pose_skip: float | None = None
    # posefix extension, off in the paper's recipes: decode each heatmap with a soft-argmax
    # within this many cells of its argmax (heatmaps.local_soft_argmax) instead of over the
    # whole map, so that a second mode does not drag the keypoint off the main one.
    decode_radius: int | None = None
    # posefix extension, off in the paper's recipes: a head that predicts, per input
    # keypoint, the probability that it is a gross error (miss, swap or inversion: KS < 0.5
    # with its ground truth), trained on the synthesized error types (model.InputErrorHead)
    error_head: bool = False
    # removed (issue 30): error-kind heads never raised AP. Only false is accepted, which
    # checkpoints saved before the removal store.
    error_kinds: bool = False
    # with the error head: keep the input keypoint wherever that probability is below this
    # (refined keypoints replace only the inputs the network believes wrong); null: never
    error_gate: float | None = None
    # with the error gate: a kept input keypoint moves this fraction of the way to the
    # refined one instead of staying exactly (0: kept as it is), per keypoint name in
    # error_blend_keypoints, else error_blend: the network's own errors are partly
    # independent of a good estimator's, so a short step towards them averages the two
    error_blend: float = 0.0
    error_blend_keypoints: dict[str, float] = field(default_factory=dict)
    # hold back where the network has no evidence: a present input keypoint that decoding
    # would replace or step is kept exactly where the heatmap's confidence (the softmax
    # mass around its peak, heatmaps.heatmap_confidence) is below this; null: never
    move_min_confidence: float | None = None
    # hold back where the network sees the person coarser than the estimator did: every
    # present input keypoint of a person whose crop shrinks the image by more than this
    # factor (image pixels per crop pixel, the square root of the crop's area in the image
    # over the network's input area) is kept exactly; null: never
    move_max_shrink: float | None = None

    def __post_init__(self) -> None:
        _check(self.move_max_shrink is None or self.move_max_shrink > 0,
               "model.move_max_shrink", "must be positive or null", self.move_max_shrink)
        _check(self.move_min_confidence is None or 0 <= self.move_min_confidence <= 1,
               "model.move_min_confidence", "must be in [0, 1] or null",
               self.move_min_confidence)
        _check(self.error_gate is None or 0 <= self.error_gate <= 1, "model.error_gate",
               "must be in [0, 1] or null", self.error_gate)
        for key, w in [("model.error_blend", self.error_blend),
                       *((f"model.error_blend_keypoints.{k}", v)
                         for k, v in self.error_blend_keypoints.items())]:
            _check(0 <= w <= 1, key, "must be in [0, 1]", w)
        _check(self.error_gate is None or self.error_head, "model.error_gate",
               "needs model.error_head: true", self.error_gate)
        _check(not self.error_kinds, "model.error_kinds", "error-kind heads were removed "
               "(they never raised AP); use the binary error head (model.error_head: true)",
               self.error_kinds)

    def blend_weights(self, names: Sequence[str] | None) -> tuple[float, ...] | None:
        """Each keypoint's ``error_blend`` (``names``: the keypoints in the network's order;
        None where no keypoint is named), or None where every one is 0."""
        unknown = sorted(set(self.error_blend_keypoints) - set(names or ()))
        _check(not unknown, "model.error_blend_keypoints", "names keypoints the layout "
               f"lacks ({', '.join(unknown)})", dict(self.error_blend_keypoints))
        if names is None:
            return (self.error_blend,) if self.error_blend else None
        weights = tuple(float(self.error_blend_keypoints.get(n, self.error_blend))
                        for n in names)
        return weights if any(weights) else None


@dataclass(frozen=True)
class GateOverride:
    """A refine- or export-time change to a checkpoint's error gate (None: as trained).

    Attributes:
        threshold: ``model.error_gate`` (0: refine every keypoint).
        blend: every keypoint's ``model.error_blend`` (0: keep each kept keypoint exactly).
    """

    threshold: float | None = None
    blend: float | None = None

    def __post_init__(self) -> None:
        for key, v in (("error gate", self.threshold), ("error blend", self.blend)):
            _check(v is None or 0 <= v <= 1, key, "must be in [0, 1]", v)

    @classmethod
    def of(cls, gate: float | GateOverride | None) -> GateOverride | None:
        """A float is a threshold alone; None and an override are returned as they are."""
        return gate if gate is None or isinstance(gate, GateOverride) else cls(float(gate))


@dataclass
class DatasetConfig:
    """One COCO-format keypoint set used for training or validation."""

    ann: str  # annotation JSON
    images: str | None = None  # image root (default: the annotation file's folder)
    results: str | None = None  # an estimator's results on this set, for unlabelled keypoints
    image_files: list[str] | None = None  # restrict to these image file names (a split)
    exclude_image_files: list[str] = field(default_factory=list)  # leave these images out
    split: str | None = None  # restrict to the images whose ``split`` field is this (LSP)
    spec: str | None = None  # the file's keypoint layout (default: from its categories)
    # keypoints (names in the model's layout) whose definition in this set differs from the
    # model's (e.g. the hips of AIC or PoseTrack vs COCO): treated as unlabelled in training
    ignore_keypoints: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """Samples, augmentation and input-pose synthesis (paper sections 3 and 4)."""

    spec: str = "coco17"
    train: list[DatasetConfig] = field(default_factory=list)
    val: list[DatasetConfig] = field(default_factory=list)
    profile: str = "default"  # error profile for synthesis (name or file)
    bbox_padding: float = 1.25
    scale_factor: float = 0.3
    rotation_factor: float = 40.0
    rotation_prob: float = 0.6
    flip: bool = True
    # training crops around the ground-truth box (gt, as the reference) or around the
    # synthesized input pose (pose, as refinement crops); validation always uses the pose
    crop_from: str = "gt"
    # photometric augmentation and occlusion of training crops (posefix.augment; off in the
    # paper's recipes): colour jitter strength, and the probabilities of a Gaussian blur,
    # grayscale and one random-noise rectangle
    color_jitter: float = 0.0
    blur_prob: float = 0.0
    gray_prob: float = 0.0
    erase_prob: float = 0.0
    # smooth random elastic warp of training crops and their keypoints (posefix.augment;
    # off in the paper's recipes): displacement std as a fraction of the crop height, and
    # the probability of warping a crop
    elastic: float = 0.0
    elastic_prob: float = 1.0
    overlap_iou: float = 0.1  # other persons overlapping by this IoU feed swap errors
    workers: int = 2  # DataLoader worker processes per training process
    repeat: int = 1  # passes over the training set per epoch (for tiny sets)
    cache_images: int = 0  # decoded images kept per worker (tiny sets; 0 = none)

    def __post_init__(self) -> None:
        _check(self.bbox_padding > 0, "data.bbox_padding", "must be positive", self.bbox_padding)
        _check(0 <= self.scale_factor < 1, "data.scale_factor", "must be in [0, 1)",
               self.scale_factor)
        _check(self.rotation_factor >= 0, "data.rotation_factor", "must be >= 0",
               self.rotation_factor)
        _check(self.crop_from in ("gt", "pose"), "data.crop_from", "must be gt or pose",
               self.crop_from)
        _check(0 <= self.color_jitter < 1, "data.color_jitter", "must be in [0, 1)",
               self.color_jitter)
        _check(0 <= self.elastic < 0.25, "data.elastic", "must be in [0, 0.25)", self.elastic)
        for name in ("blur_prob", "gray_prob", "erase_prob", "elastic_prob"):
            _check(0 <= getattr(self, name) <= 1, f"data.{name}", "must be in [0, 1]",
                   getattr(self, name))
        _check(0 <= self.rotation_prob <= 1, "data.rotation_prob", "must be in [0, 1]",
               self.rotation_prob)
        _check(0 <= self.overlap_iou <= 1, "data.overlap_iou", "must be in [0, 1]",
               self.overlap_iou)
        _check(self.workers >= 0, "data.workers", "must be >= 0", self.workers)
        _check(self.repeat >= 1, "data.repeat", "must be >= 1", self.repeat)
        _check(self.cache_images >= 0, "data.cache_images", "must be >= 0", self.cache_images)


@dataclass
class OptimConfig:
    """Optimizer and schedule (paper section 6: Adam 5e-4, x0.1 at 90 and 120 of 140)."""

    lr: float = 5e-4
    epochs: int = 140
    lr_steps: tuple[int, ...] = (90, 120)
    lr_factor: float = 0.1
    batch_size: int = 32  # per process
    weight_decay: float = 0.0
    accumulate: int = 1  # gradient accumulation steps
    amp: bool = False  # mixed precision (autocast; GradScaler for float16 on CUDA)
    amp_dtype: str = "float16"  # float16 or bfloat16 (bfloat16 also on CPU)
    max_steps: int | None = None  # stop after this many optimizer steps (tiny runs)
    # exponential moving average of the weights (timm's ModelEmaV2 idea; off in the paper's
    # recipes): validation and final.pt use the averaged weights; decay warms up as
    # min(ema_decay, (1 + step) / (10 + step))
    ema_decay: float | None = None
    error_weight: float = 1.0  # weight of the error head's binary cross-entropy in the loss
    # train only the parameters under these modules of the network (e.g. [error_head]:
    # calibrate the error head on new data and keep every other weight, BatchNorm
    # statistics included, as run.init_from gave it); empty: train everything
    train_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be positive", self.lr)
        _check(self.epochs >= 1, "optim.epochs", "must be >= 1", self.epochs)
        _check(self.lr_factor > 0, "optim.lr_factor", "must be positive", self.lr_factor)
        _check(self.batch_size >= 1, "optim.batch_size", "must be >= 1", self.batch_size)
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        _check(self.accumulate >= 1, "optim.accumulate", "must be >= 1", self.accumulate)
        _check(self.amp_dtype in ("float16", "bfloat16"), "optim.amp_dtype",
               "must be float16 or bfloat16", self.amp_dtype)
        _check(self.ema_decay is None or 0 < self.ema_decay < 1, "optim.ema_decay",
               "must be in (0, 1) or null", self.ema_decay)
        _check(self.error_weight >= 0, "optim.error_weight", "must be >= 0", self.error_weight)
        _check(self.max_steps is None or self.max_steps >= 1, "optim.max_steps",
               "must be >= 1 or null", self.max_steps)


@dataclass
class RunConfig:
    """Where and how often to write things."""

    out_dir: str = "runs/posefix"
    seed: int = 0
    log: str = "csv"  # csv or tensorboard
    log_every: int = 20  # steps
    checkpoint_every: int = 200  # steps; also at every epoch end
    val_every: int = 1  # epochs; 0 disables validation
    device: str = "auto"  # auto, cpu, cuda (torchrun: cuda:LOCAL_RANK)
    progress: bool = True  # tqdm progress bar on rank 0
    # train in the channels-last memory layout (about 1.3x faster for MobileNetV2 in
    # bfloat16 on a CPU; the checkpoint is the same)
    channels_last: bool = False
    # fine-tune: start from this checkpoint's weights (not its optimizer or step); weights
    # the config adds (e.g. model.error_head's) start fresh (checkpoint.init_weights_from)
    init_from: str | None = None

    def __post_init__(self) -> None:
        _check(self.log in ("csv", "tensorboard"), "run.log", "must be csv or tensorboard",
               self.log)
        _check(self.log_every >= 1, "run.log_every", "must be >= 1", self.log_every)
        _check(self.checkpoint_every >= 0, "run.checkpoint_every", "must be >= 0 (0: epoch "
               "ends only)", self.checkpoint_every)
        _check(self.val_every >= 0, "run.val_every", "must be >= 0", self.val_every)
        _check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
               "run.device", "must be auto, cpu, cuda or cuda:N", self.device)


@dataclass
class Config:
    """A whole training configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}, got {value!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert plain YAML data to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = args or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in
                         enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key(s): {', '.join(where + u for u in sorted(unknown))}"
                          f"; known: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def config_from_dict(data: dict | None) -> Config:
    """Build a :class:`Config` from plain data (missing keys take their defaults)."""
    return _build(Config, data or {}, "")


def config_to_dict(cfg: Any) -> dict:
    """Plain data (lists, not tuples) for YAML, JSON and checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def available_configs() -> list[str]:
    """Names of the built-in training configs."""
    return builtin_names("configs")


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def _apply_overrides(data: dict, overrides: list[str]) -> None:
    """Set each ``key.sub=value`` of ``overrides`` in plain config data (values as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)


def override_config(cfg: Config, overrides: list[str]) -> Config:
    """``cfg`` with ``key.sub=value`` overrides applied, parsed and validated as
    :func:`load_config`'s (e.g. a checkpoint's decoding settings)."""
    data = config_to_dict(cfg)
    _apply_overrides(data, overrides)
    return config_from_dict(data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or a built-in config name) and apply ``key.sub=value`` overrides.

    Override values are parsed as YAML (``optim.lr=1e-3``, ``data.flip=false``,
    ``model.input_size=[128,96]``). Relative data paths in a file are resolved against
    the file's folder.
    """
    data: dict = {}
    base: Path | None = None
    if path is not None:
        found = read_yaml(path, "configs", "config", ConfigError)
        data = found.data or {}
        base = found.path.resolve().parent if found.path is not None else None
        if not isinstance(data, dict):
            raise ConfigError(f"{found.source}: a config must be a mapping")
    _apply_overrides(data, overrides or [])
    cfg = config_from_dict(data)
    if base is not None:
        for ds in [*cfg.data.train, *cfg.data.val]:
            for attr in ("ann", "images", "results"):
                v = getattr(ds, attr)
                if v is not None and not Path(v).is_absolute() and not v.startswith("~"):
                    setattr(ds, attr, str((base / v).resolve()) if (base / v).exists() else v)
    return cfg
