"""Built-in files of the package: YAML (specs, profiles, configs; or a user's file by path)
and the shipped model.

One rule for every kind: a name among the package's files of that kind (``coco17``,
``default``, ``tiny_cpu``) is the built-in file; anything else is a path. The parsed data
comes back with a ``source`` to name in errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["YamlSource", "builtin_names", "default_checkpoint_path", "read_yaml"]


@dataclass(frozen=True)
class YamlSource:
    """Parsed YAML and where it came from (``path`` is None for a built-in file)."""

    data: Any
    source: str
    path: Path | None


def builtin_names(folder: str) -> list[str]:
    """Names of the built-in YAML files in a package folder (``configs``, ``specs``...)."""
    files = resources.files("posefix").joinpath(folder).iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


def read_yaml(name_or_path: str | Path, folder: str, kind: str,
              error: type[Exception]) -> YamlSource:
    """Read the built-in ``folder/NAME.yaml`` or the file at ``name_or_path``.

    ``kind`` names the thing in messages ("keypoint spec"); ``error`` is the exception
    raised for an unknown name or invalid YAML.
    """
    key = str(name_or_path)
    names = builtin_names(folder)
    if key.lower() in names:
        text = resources.files("posefix").joinpath(f"{folder}/{key.lower()}.yaml").read_text()
        source, path = f"posefix/{folder}/{key.lower()}.yaml", None
    else:
        path = Path(key)
        if not path.is_file():
            raise error(f"unknown {kind} {key!r}: not a file and not one of {names}")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        return YamlSource(yaml.safe_load(text), source, path)
    except yaml.YAMLError as e:
        raise error(f"{source}: not valid YAML: {e}") from None


def default_checkpoint_path() -> Path:
    """The demo model shipped with the package (``posefix/assets/demo_model.pt``)."""
    path = Path(__file__).resolve().parent / "assets" / "demo_model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"the shipped demo model is missing from this install "
                                f"(expected {path}); pass a checkpoint explicitly")
    return path
