"""Shared fixtures: where the real test data lives.

The small multi-person sets (COCO, OCHuman, CrowdPose, PoseTrack18, AIC, MPII: images,
annotations and the real estimators' results) are copied into ``tests/data`` (2.3 MB), so
that the tests run on a fresh clone. The larger sets (LSP's splits and its estimators'
files, PARSE) live only in ``../shared/data``: tests that need them skip without it, and
fail instead where ``POSEFIX_REQUIRE_SHARED=1`` (CI sets it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
REQUIRE_SHARED = os.environ.get("POSEFIX_REQUIRE_SHARED", "") not in ("", "0")
# ONNX exports of the default backend go to a cache of the tests, not the user's.
os.environ.setdefault("POSEFIX_CACHE", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), "posefix-test-cache", "posefix-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``tests/data``: the small multi-person sets, laid out as in ``../shared/data``."""
    return DATA


@pytest.fixture(scope="session")
def coco_dir(data_dir: Path) -> Path:
    """The COCO-17 sample: 4 val2017 images, their annotations and real estimators' results."""
    return data_dir / "coco"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (LSP, PARSE): skips without it, fails
    instead under ``POSEFIX_REQUIRE_SHARED=1``."""
    if not (SHARED_DATA / "lsp").is_dir():
        msg = (f"needs ../shared/data (LSP and its estimators' files), not found at "
               f"{SHARED_DATA}")
        if REQUIRE_SHARED:
            pytest.fail(f"{msg}; POSEFIX_REQUIRE_SHARED is set")
        pytest.skip(msg)
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_cpu_data(data_dir: Path) -> list[str]:
    """Overrides that point the built-in ``tiny_cpu`` config's data (``../shared/data/...``)
    at the same files in ``tests/data``."""
    import json
    from importlib import resources

    import yaml

    text = resources.files("posefix").joinpath("configs/tiny_cpu.yaml").read_text()
    data = yaml.safe_load(text)["data"]
    out = []
    for part in ("train", "val"):
        sets = [{k: v.replace("../shared/data", str(data_dir)) if isinstance(v, str) else v
                 for k, v in ds.items()} for ds in data[part]]
        out.append(f"data.{part}={json.dumps(sets)}")
    return out


@pytest.fixture(scope="session")
def misfit_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random resnet18 COCO-17 refiner at 64x48: a crop size the shipped int8 calibration
    set does not fit."""
    torch = pytest.importorskip("torch")
    from posefix.checkpoint import save_checkpoint
    from posefix.config import Config, ModelConfig
    from posefix.model import build_model
    from posefix.spec import load_spec

    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet18", input_size=(64, 48), deconv_channels=16))
    return save_checkpoint(tmp_path_factory.mktemp("misfit") / "tiny.pt",
                           model=build_model(cfg.model, 17), config=cfg, spec=load_spec("coco17"))
