"""A fingerprint of ``posefix.train.train``'s results, to check that a change of the training
code keeps its behaviour: run it on two checkouts and ``diff`` the JSON files.

Trains tiny_cpu (16 deconvolution channels) on the six persons of two COCO images of
tests/data, in process, one thread, Python's ``random`` seeded (its state goes into
``last.pt``): run ``a`` (batch 2 x accumulate 2, 3 epochs, learning-rate step, checkpoints,
7 steps), run ``b`` (the same, interrupted after step 5 and resumed), run ``v`` (batch 5:
an uneven last step, EMA, validation every epoch, a checkpoint every step), ``v`` resumed
when finished, and ``v`` resumed with batch 4 and a 4th epoch (a warning). Per run: a hash
of every tensor and value of ``last.pt`` and ``final.pt`` (weights, optimizer, schedule,
scaler, EMA, counters, RNG states), the rows of ``log.csv`` and ``val.csv`` (less
``crops_per_s``), ``config.yaml`` (less the output folder); the callbacks' states and the
warnings with the file they are attributed to. Another checkout's code, e.g. the start
of a change::

    git archive REV src | tar -x -C /tmp/old
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/old/src python benchmarks/train_fingerprint.py /tmp/fa old.json
    OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src python benchmarks/train_fingerprint.py /tmp/fb new.json
    diff old.json new.json && echo identical
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import warnings
from pathlib import Path
from typing import Any

import torch

from posefix.checkpoint import load_checkpoint
from posefix.config import Config, load_config
from posefix.train import TrainState, train

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SETS = (f"[{{ann: {DATA / 'coco' / 'test_coco.json'}, "
        f"image_files: [000000000785.jpg, 000000197388.jpg]}}]")
COMMON = ["optim.batch_size=2", "optim.accumulate=2", "data.repeat=2", "optim.epochs=3",
          "optim.lr_steps=[1]", "run.checkpoint_every=2", "optim.max_steps=7", "data.val=[]",
          "run.val_every=0"]
VALIDATED = ["data.repeat=2", "run.val_every=1", f"data.val={SETS}", "optim.ema_decay=0.9",
             "run.checkpoint_every=1"]


def _config(out: Path, *extra: str) -> Config:
    return load_config("tiny_cpu", [
        f"data.train={SETS}", f"run.out_dir={out}", "run.progress=false", "data.workers=0",
        "run.log_every=1", "model.deconv_channels=16", *extra])


def _hash(obj: Any) -> str:
    """Tensors by dtype and bytes, containers in order (dicts by key), the rest by repr."""
    h = hashlib.sha256()

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            h.update(str(o.dtype).encode())
            h.update(o.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(str(k).encode())
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()[:16]


def _files(run: Path) -> dict[str, Any]:
    """The checkpoints' hashes, the log rows and the config of one run's folder."""
    out: dict[str, Any] = {}
    for name in ("last.pt", "final.pt"):
        if (run / name).is_file():
            ck = load_checkpoint(run / name)
            out[name] = {"model": _hash(ck.model.state_dict()),
                         **{k: _hash(v) for k, v in ck.extra.items()}}
    for name in ("log.csv", "val.csv"):
        if (run / name).is_file():
            with (run / name).open(newline="") as f:
                out[name] = [{k: v for k, v in row.items() if k != "crops_per_s"}
                             for row in csv.DictReader(f)]
    out["config.yaml"] = (run / "config.yaml").read_text().replace(str(run), "OUT")
    return out


def _train(cfg: Config, resume: str, stop_at: int | None = None,
           seen: list[list[Any]] | None = None) -> list[list[str]]:
    """Train; returns the warnings (message, file). ``stop_at``: interrupt after that step;
    ``seen``: gets each callback's state."""

    class Stop(Exception):
        pass

    def callback(s: TrainState) -> None:
        if seen is not None:
            seen.append([s.step, s.epoch, s.total_steps, s.loss, s.rank])
        if s.step == stop_at:
            raise Stop

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            train(cfg, resume=resume, callback=callback)
        except Stop:
            pass
    return [[str(w.message), Path(w.filename).name] for w in caught
            if "posefix" in w.filename or w.filename.endswith("train.py")]


def fingerprint(out: Path) -> dict[str, Any]:
    """Train the runs into ``out`` (see the module's docstring) and fingerprint them."""
    torch.set_num_threads(1)
    random.seed(0)
    result: dict[str, Any] = {"warnings": {}}
    seen: list[list[Any]] = []
    v5 = ["optim.batch_size=5", "optim.epochs=3", *VALIDATED]
    runs: list[tuple[str, Config, str, int | None]] = [
        ("a", _config(out / "a", *COMMON), "no", None),
        ("b_interrupted", _config(out / "b", *COMMON), "no", 5),
        ("b", _config(out / "b", *COMMON), "auto", None),
        ("v", _config(out / "v", *v5), "no", None),
        ("v_finished", _config(out / "v", *v5), "auto", None),
        ("v_more", _config(out / "v", "optim.batch_size=4", "optim.epochs=4", *VALIDATED),
         "auto", None),
    ]
    for name, cfg, resume, stop_at in runs:
        result["warnings"][name] = _train(cfg, resume, stop_at, seen if name == "a" else None)
        result[name] = _files(Path(cfg.run.out_dir))
    result["a_callbacks"] = seen
    return result


def main() -> None:
    """Parse the arguments, train, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="a folder for the runs (emptied first)")
    ap.add_argument("json", type=Path, help="the fingerprint to write")
    a = ap.parse_args()
    for run in ("a", "b", "v"):
        for f in (a.work / run).glob("*") if (a.work / run).is_dir() else ():
            if f.is_file():
                f.unlink()
    a.json.write_text(json.dumps(fingerprint(a.work), indent=1, default=str) + "\n")
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
