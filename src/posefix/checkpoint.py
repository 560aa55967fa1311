"""Checkpoints: the network's weights with the config and keypoint spec that define it.

A checkpoint is one ``torch.save`` file holding only plain data (tensors, dicts, lists,
tuples, strings, numbers), so :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)`` and never runs pickled code::

    {"format": "posefix-checkpoint", "version": 1, "config": {...}, "spec": {...},
     "model": state_dict, "half": bool, "extra": {...}}

``extra`` is the trainer's: optimizer and scheduler state dicts, step, epoch, RNG states
(:func:`capture_rng_state` gives them in plain form). Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .builtin import default_checkpoint_path
from .config import Config, ConfigError, ModelConfig, config_from_dict, config_to_dict
from .decoding import Decoding
from .errors import InputError
from .jsonfiles import atomic_write
from .model import PoseFixNet, build_model
from .spec import KeypointSpec, SpecError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedCheckpoint",
    "capture_rng_state",
    "default_checkpoint_path",
    "init_weights_from",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "posefix-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(InputError):
    """A checkpoint file is unreadable, corrupt or not a posefix checkpoint."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: the network in eval mode (float32) and what defines it."""

    model: PoseFixNet
    config: Config
    spec: KeypointSpec
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def decoding(self) -> Decoding:
        """How the network's outputs become keypoints, as trained
        (:meth:`posefix.decoding.Decoding.from_model_config`)."""
        return Decoding.from_model_config(self.config.model, self.spec.keypoints)


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        for attr in ("module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError unless ``obj`` is loadable with ``torch.load(weights_only=True)``."""
    if obj is None or isinstance(obj, (Tensor, str, bytes, bool, int, float, torch.dtype)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: keys must be str or int, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    hint = " (convert numpy arrays with torch.from_numpy or .tolist())" \
        if isinstance(obj, (np.ndarray, np.generic)) else ""
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__name__} cannot be stored "
                    f"in a checkpoint; use tensors, dicts, lists, str or numbers{hint}")


def save_checkpoint(
    path: str | Path, *, model: nn.Module, config: Config | ModelConfig, spec: KeypointSpec,
    extra: dict[str, Any] | None = None, half: bool = False,
) -> Path:
    """Write a checkpoint atomically (temporary file beside ``path``, then rename).

    Args:
        path: output file (parent folders are created).
        model: a :class:`PoseFixNet` (DDP / compiled wrappers are unwrapped).
        config: the run's :class:`Config` (a bare :class:`ModelConfig` is wrapped in one).
        spec: the keypoint layout the model was trained for.
        extra: trainer state; plain data only (see :func:`capture_rng_state`).
        half: store floating weights as float16 (half the size, for shipping).

    Returns:
        ``path``.
    """
    path = Path(path)
    if isinstance(config, ModelConfig):
        config = Config(model=config)
    net = _unwrap(model)
    k = getattr(net, "num_keypoints", spec.num_keypoints)
    if k != spec.num_keypoints:
        raise ValueError(f"model has {k} keypoints but spec {spec.name} has {spec.num_keypoints}")
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    state = {}
    for name, t in net.state_dict().items():
        t = t.detach().cpu()
        state[name] = t.half() if half and t.is_floating_point() else t.clone()
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config_to_dict(config),
        "spec": spec.to_dict(),
        "model": state,
        "half": bool(half),
        "extra": extra,
    }
    return atomic_write(path, lambda f: torch.save(payload, f), binary=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> LoadedCheckpoint:
    """Read a checkpoint and rebuild its network (eval mode, float32, on ``map_location``).

    The config's ``model.pretrained`` file is not needed (nor read): the weights come from
    the checkpoint. Raises FileNotFoundError for a missing file and :class:`CheckpointError`
    (naming the file) for an unreadable, corrupt or foreign one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: file does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a zip/pickle, or holding non-plain objects
        why = ("it holds Python objects, not plain data: not a posefix checkpoint"
               if "Weights only load failed" in str(e)
               else "truncated or corrupt; was it copied completely?")
        raise CheckpointError(path, f"not a readable checkpoint ({why})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(path, f"not a posefix checkpoint (no '{FORMAT}' format tag)")
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format version {version!r} is not supported "
                              f"(this posefix reads up to {FORMAT_VERSION})")
    for key in ("config", "spec", "model"):
        if not isinstance(data.get(key), dict):
            raise CheckpointError(path, f"field '{key}' is missing or not a mapping")
    try:
        config = config_from_dict(data["config"])
        spec = KeypointSpec.from_dict(data["spec"], source=f"{path}: spec")
    except (ConfigError, SpecError) as e:
        raise CheckpointError(path, str(e)) from None
    model_cfg = dataclasses.replace(config.model, pretrained=None)
    try:
        model = build_model(model_cfg, spec.num_keypoints)
        Decoding.from_model_config(model_cfg, spec.keypoints)  # names it reads must exist
        state = {k: v.float() if v.is_floating_point() else v for k, v in data["model"].items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, ConfigError, AttributeError) as e:
        raise CheckpointError(path, f"weights do not match the stored config: "
                              f"{str(e).splitlines()[0]}") from None
    model.to(map_location).eval()
    extra = data.get("extra") or {}
    return LoadedCheckpoint(model=model, config=config, spec=spec, extra=dict(extra), path=path)


def init_weights_from(model: nn.Module, path: str | Path) -> list[str]:
    """Load a checkpoint's weights into ``model`` to fine-tune it (``run.init_from``).

    Every weight the two share must match in shape; weights only the model has keep their
    initialization. Returns the names of the weights that started fresh.
    """
    ck = load_checkpoint(path)
    src = ck.model.state_dict()
    net = _unwrap(model)
    own = net.state_dict()
    bad = [k for k in own if k in src and src[k].shape != own[k].shape]
    if bad:
        raise CheckpointError(Path(path), f"run.init_from: shapes differ from the config's "
                                          f"network for {', '.join(bad[:5])}")
    unexpected = sorted(set(src) - set(own))
    if unexpected:
        raise CheckpointError(Path(path), f"run.init_from: weights the config's network "
                                          f"lacks: {', '.join(unexpected[:5])}")
    net.load_state_dict({k: src[k].to(own[k].dtype) for k in own if k in src}, strict=False)
    return sorted(set(own) - set(src))


def capture_rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Python, torch (CPU and CUDA) and optionally a NumPy generator's RNG states.

    Plain data only, so the result can go into a checkpoint's ``extra``.
    """
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["numpy"] = generator.bit_generator.state  # a dict of str and int
    return state


def restore_rng_state(state: dict[str, Any], generator: np.random.Generator | None = None
                      ) -> None:
    """Restore RNG states captured by :func:`capture_rng_state` (missing parts are skipped)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [torch.as_tensor(s, dtype=torch.uint8).cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if generator is not None and "numpy" in state:
        generator.bit_generator.state = state["numpy"]
