"""What the demo recipes share: where the shared data lives, the held-out suites of
evaluate.py, and a checkpoint with its decoding options overridden. Recipe-only (not a
capability of the package); each recipe imports it as ``from common import ...`` (a
script's own folder is on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posefix.checkpoint import load_checkpoint, save_checkpoint
from posefix.config import override_config
from posefix.jsonfiles import read_json, write_json_atomic

__all__ = ["DATA", "REPO", "SUITES", "held_out_subset", "with_overrides"]

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
SUITES: dict[str, list[dict[str, Any]]] = {
    "lsp": [{"name": "lsp", "gt": "lsp/coco17.json", "split": "test",
             "inputs": ["blazepose_gtboxes.json", "movenet_multipose.json",
                        "posenet_gtboxes.json", "posenet_multi.json"]}],
    "multi": [
        {"name": "coco", "gt": "coco/test_coco.json",
         "files": ["000000040083.jpg", "000000196141.jpg"],
         "inputs": ["blazepose_gtboxes.json", "blazepose_detboxes.json",
                    "movenet_multipose.json"]},
        {"name": "ochuman", "gt": "ochuman/test_ochuman.json", "files": ["003896.jpg"],
         "inputs": ["blazepose_gtboxes.json", "movenet_multipose.json"]},
    ],
}


def held_out_subset(entry: dict[str, Any], out: Path) -> tuple[Path, set[int]]:
    """The held-out part of a ground-truth file, written to ``out``; its image ids."""
    data = read_json(DATA / entry["gt"])
    keep = [i for i in data["images"]
            if ("split" not in entry or i.get("split") == entry["split"])
            and ("files" not in entry or i["file_name"] in entry["files"])]
    ids = {i["id"] for i in keep}
    data["images"] = keep
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    return write_json_atomic(out / f"{entry['name']}_held_out.json", data), ids


def with_overrides(checkpoint: Path, overrides: list[str], tmp: Path) -> Path:
    """The checkpoint with ``model.*`` decoding options overridden (e.g. the error gate)."""
    if not overrides:
        return checkpoint
    ck = load_checkpoint(checkpoint)
    config = override_config(ck.config, overrides)  # validated as the checkpoint's own
    model_cfg = config.model
    ck.model.decode_radius = model_cfg.decode_radius
    return save_checkpoint(tmp / "overridden.pt", model=ck.model, config=config, spec=ck.spec,
                           extra=ck.extra)
