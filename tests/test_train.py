"""Training end to end on real images: learning, exact resumption after a kill, DDP on gloo."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from posefix.checkpoint import load_checkpoint
from posefix.config import Config, ConfigError, load_config
from posefix.data import build_dataset
from posefix.model import build_model
from posefix.train import TrainState, ema_update, train, validate

REPO = Path(__file__).resolve().parents[1]
COCO_NAMES = ("nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder "
              "left_elbow right_elbow left_wrist right_wrist left_hip right_hip left_knee "
              "right_knee left_ankle right_ankle").split()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a small shared CPU, spinning thread teams cost far more than the
    parallelism gives (the subprocesses get OMP_NUM_THREADS=1 likewise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(shared: Path, out: Path, *extra: str) -> Config:
    """tiny_cpu on the six persons of two COCO images; small batches, no validation."""
    coco = shared / "coco" / "test_coco.json"
    sets = f"[{{ann: {coco}, image_files: [000000000785.jpg, 000000197388.jpg]}}]"
    return load_config("tiny_cpu", [
        f"data.train={sets}", "data.val=[]", f"run.out_dir={out}", "run.progress=false",
        "run.val_every=0", "data.workers=0", "run.log_every=1", *extra])


def _log(out: Path) -> list[dict[str, float]]:
    with (out / "log.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


class _Stop(Exception):
    """Raised by a training callback to interrupt a run in process."""


def _interrupt_at(cfg: Config, step: int) -> None:
    """Train ``cfg`` from scratch and interrupt it (no final checkpoint) at ``step``."""

    def stop(s: TrainState) -> None:
        if s.step == step:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, resume="no", callback=stop)


@pytest.mark.slow
def test_training_lowers_the_loss_and_refines_inputs(data_dir: Path, tmp_path: Path) -> None:
    # An error profile where most keypoints are wrong, so that "refined beats input" means
    # the network corrects errors rather than copying its (mostly good) input.
    profile = tmp_path / "harsh.yaml"
    profile.write_text(textwrap.dedent(f"""\
        name: harsh
        labelled_bins: [17]
        overlap_bins: [0]
        groups:
          all:
            keypoints: [{", ".join(COCO_NAMES)}]
            jitter: 0.3
            inversion: 0.1
            miss: 0.3
            swap: 0.1
        fallback: {{}}
        default_group: all
        """))
    steps = 80
    cfg = _tiny(data_dir, tmp_path / "run", f"optim.max_steps={steps}", "optim.batch_size=8",
                "data.repeat=40", "optim.lr=2e-3", "data.scale_factor=0.0",
                "data.rotation_prob=0.0", "data.flip=false", f"data.profile={profile}",
                "run.log_every=10", "run.checkpoint_every=0")
    final = train(cfg, resume="no")
    log = _log(tmp_path / "run")
    assert log[-1]["step"] == steps
    first, last = log[0]["loss"], log[-1]["loss"]
    assert np.isfinite(last) and last < 0.5 * first, (first, last)
    ck = load_checkpoint(final)
    assert ck.extra["step"] == steps and ck.spec.name == "coco17"
    # The same persons, cropped as in training, with fresh fixed-seed synthesized inputs.
    train_set = build_dataset(cfg, "train")
    val = build_dataset(cfg, "val", table=train_set.table, crop_from="gt")
    m = validate(ck.model, val, batch_size=16)
    assert m["err_refined"] < 0.5 * m["err_input"], m
    assert 0 <= m["AP_input"] < m["AP_refined"] <= 1, m


def test_resume_in_process_reaches_the_same_state(data_dir: Path, tmp_path: Path) -> None:
    # 6 persons x 2 = 12 samples, batch 2 x accumulate 2: 3 steps per epoch; lr drops at
    # epoch 1 (step 3); stop inside epoch 1 (step 5) and resume to step 7.
    common = ("optim.batch_size=2", "optim.accumulate=2", "data.repeat=2", "optim.epochs=3",
              "optim.lr_steps=[1]", "run.checkpoint_every=2", "optim.max_steps=7",
              "model.deconv_channels=16")
    straight = train(_tiny(data_dir, tmp_path / "a", *common), resume="no")
    cfg_b = _tiny(data_dir, tmp_path / "b", *common)
    _interrupt_at(cfg_b, 5)
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck.extra["step"] == 4 and ck.extra["epoch"] == 1 and ck.extra["sample_in_epoch"] == 4
    resumed = train(cfg_b, resume="auto")
    _assert_same_weights(_weights(straight), _weights(resumed))
    # The lr schedule came back too, and the log holds each step once.
    la, lb = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["step"] for r in lb] == [r["step"] for r in la] == list(range(1, 8))
    assert [r["lr"] for r in lb] == [r["lr"] for r in la]
    assert la[1]["lr"] > la[-1]["lr"]
    np.testing.assert_allclose([r["loss"] for r in lb], [r["loss"] for r in la], rtol=1e-4)


def test_ema_update_moves_floats_and_copies_counters() -> None:
    ema, net = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(2.0)
    net.num_batches_tracked.fill_(7)
    ema_update(ema, net, decay=0.75)
    torch.testing.assert_close(ema.weight, torch.full((2,), 1.5))  # 0.75 * 1 + 0.25 * 3
    torch.testing.assert_close(ema.running_mean, torch.full((2,), 0.5))
    assert int(ema.num_batches_tracked) == 7


def test_ema_and_photometric_runs_resume_exactly(data_dir: Path, tmp_path: Path) -> None:
    # The averaged weights travel in last.pt and final.pt holds them, not the raw weights;
    # the photometric draws are part of each sample's pure function of (seed, epoch, index).
    common = ("optim.batch_size=2", "data.repeat=2", "optim.epochs=2", "optim.max_steps=5",
              "run.checkpoint_every=2", "model.deconv_channels=16", "optim.ema_decay=0.9",
              "data.color_jitter=0.4", "data.blur_prob=0.5", "data.gray_prob=0.5",
              "data.erase_prob=0.5")
    straight = train(_tiny(data_dir, tmp_path / "a", *common), resume="no")
    raw = load_checkpoint(tmp_path / "a" / "last.pt")
    assert "ema" in raw.extra
    _assert_same_weights(_weights(straight), raw.extra["ema"])
    differs = [k for k, v in raw.model.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, raw.extra["ema"][k])]
    assert differs
    cfg_b = _tiny(data_dir, tmp_path / "b", *common)
    _interrupt_at(cfg_b, 3)
    _assert_same_weights(_weights(straight), _weights(train(cfg_b, resume="auto")))


_KILL_SCRIPT = """
import os, signal, sys
from posefix.config import load_config
from posefix.train import train
cfg = load_config("tiny_cpu", sys.argv[2:])
kill_at = int(sys.argv[1])
def cb(s):
    if s.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint
train(cfg, resume="auto", callback=cb)
"""


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(data_dir: Path, tmp_path: Path) -> None:
    common = ["optim.batch_size=4", "data.repeat=2", "optim.epochs=4", "optim.lr_steps=[2]",
              "run.checkpoint_every=2", "optim.max_steps=6", "model.deconv_channels=16"]
    # 12 samples / batch 4 = 3 steps per epoch: checkpoints at steps 2, 3 (epoch end) and 4.
    cfg_b = _tiny(data_dir, tmp_path / "b", *common)
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    args = [f"data.train=[{{ann: {cfg_b.data.train[0].ann}, image_files: "
            f"[000000000785.jpg, 000000197388.jpg]}}]", "data.val=[]",
            f"run.out_dir={tmp_path / 'b'}", "run.progress=false", "run.val_every=0",
            "data.workers=1", "run.log_every=1", *common]
    proc = subprocess.run([sys.executable, str(script), "5", *args], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (tmp_path / "b" / "final.pt").exists()
    assert load_checkpoint(tmp_path / "b" / "last.pt").extra["step"] == 4
    resumed = train(cfg_b, resume="auto")
    straight = train(_tiny(data_dir, tmp_path / "a", *common), resume="no")
    _assert_same_weights(_weights(straight), _weights(resumed))


_DDP_SCRIPT = """
import sys, torch
from posefix.config import load_config
from posefix.train import train
cfg = load_config("tiny_cpu", sys.argv[1:])
out = cfg.run.out_dir
def cb(s):
    if s.step == s.total_steps:
        # Parameters (BatchNorm statistics are per process until the end of training).
        state = {k: v.detach() for k, v in s.model.named_parameters()}
        torch.save({"state": state, "loss": s.loss}, f"{out}/rank{s.rank}.pt")
train(cfg, resume="no", callback=cb)
"""


@pytest.mark.slow
def test_two_processes_on_gloo_end_with_identical_weights(data_dir: Path,
                                                          tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "ddp"
    coco = data_dir / "coco" / "test_coco.json"
    args = [f"data.train=[{{ann: {coco}}}]", "data.val=[]", f"run.out_dir={out}",
            "run.progress=false", "run.val_every=0", "data.workers=0", "run.log_every=1",
            "optim.batch_size=2", "optim.max_steps=3", "model.deconv_channels=16",
            "run.checkpoint_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert np.isfinite(r0["loss"]) and r0["loss"] == r1["loss"]  # all-reduced mean
    _assert_same_weights(r0["state"], r1["state"])
    # Rank 0 wrote the checkpoints, holding those weights; and training moved them.
    final = load_checkpoint(out / "final.pt").model.state_dict()
    _assert_same_weights({k: final[k] for k in r0["state"]}, r0["state"])
    torch.manual_seed(0)  # the run's seed: the same initial weights as train() built
    init = dict(build_model(load_config("tiny_cpu", args).model, 17).named_parameters())
    assert all(not torch.allclose(init[k], r0["state"][k]) for k in ("backbone.conv1.weight",
                                                                      "final.weight"))
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    ck = load_checkpoint(out / "last.pt")
    # Each of the 2 processes took 3 batches of 2 crops of epoch 0.
    assert (ck.extra["world_size"], ck.extra["step"], ck.extra["epoch"],
            ck.extra["sample_in_epoch"]) == (2, 3, 0, 6)


def test_bad_setups_fail_clearly(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        train(_tiny(data_dir, tmp_path / "x", "optim.batch_size=64", "data.repeat=1"),
              resume="no")
    with pytest.raises(ConfigError, match="data.train"):
        train(_tiny(data_dir, tmp_path / "y", "data.train=[]"), resume="no")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        train(_tiny(data_dir, tmp_path / "z"), resume=str(tmp_path / "nothing.pt"))


def test_tensorboard_logging_or_csv_fallback(data_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "tb", "run.log=tensorboard", "optim.max_steps=1",
                "optim.batch_size=2", "model.deconv_channels=16", "run.checkpoint_every=0")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard"):
            train(cfg, resume="no")
        assert [r["step"] for r in _log(tmp_path / "tb")] == [1]
    else:
        train(cfg, resume="no")
        assert any((tmp_path / "tb" / "tb").iterdir())


_SAMPLES_SCRIPT = """
import json, os, sys
from pathlib import Path
import posefix.data as D
import posefix.train as T
from posefix.checkpoint import load_checkpoint
from posefix.config import load_config

out, common = sys.argv[1], sys.argv[2:]
log = {"keys": [], "stand_ins": [], "step": 0}
getitem = D.PoseFixDataset.__getitem__

def logged(self, key):  # every training sample drawn, with the step it is drawn for
    if self.train and isinstance(key, tuple):
        log["keys"].append([int(key[0]), int(key[1]), log["step"] + 1])
    return getitem(self, key)

def stand_in(ds, epoch):
    log["stand_ins"].append([epoch, log["step"] + 1])
    return T.default_collate([getitem(ds, (epoch, 0))])

D.PoseFixDataset.__getitem__ = logged
T._stand_in = stand_in
# One process group for the three runs (a default group re-created in the same torchrun
# store can meet the previous one's keys): train() joins it and must not destroy it.
T.dist.init_process_group("gloo")
destroy, T.dist.destroy_process_group = T.dist.destroy_process_group, lambda: None

class Stop(Exception):
    pass

def run(name, tag, extra, stop_at=None):
    cfg = load_config("tiny_cpu", [*common, f"run.out_dir={out}/{name}", *extra])
    last = Path(out, name, "last.pt")
    log.update(keys=[], stand_ins=[], step=load_checkpoint(last).extra["step"]
               if last.is_file() else 0)
    def cb(s):
        log["step"] = s.step
        if s.step == stop_at:
            raise Stop
    try:
        T.train(cfg, resume="auto", callback=cb)
    except Stop:
        pass
    with open(f"{out}/{tag}.rank{os.environ['RANK']}.json", "w") as f:
        json.dump(log, f)

# 7 persons, 1 crop per process and step: 4 steps an epoch, the last one a single crop
# (rank 1 has none); interrupted after step 3 (checkpoint at step 2), resumed to the end.
a = ["optim.batch_size=1", "optim.epochs=2", "run.checkpoint_every=2"]
run("a", "a1", a, stop_at=3)
run("a", "a2", a)
# 21 crops, 2 x 2 per process and step: 3 steps, the last one 5 crops: rank 0 takes
# micro-batches of 2 and 1, rank 1 one of 2 (different numbers of DDP forwards).
run("b", "b", ["data.repeat=3", "optim.batch_size=2", "optim.accumulate=2", "optim.epochs=1"])
destroy()
"""


@pytest.mark.slow
def test_two_gloo_processes_train_every_sample_once_per_epoch(data_dir: Path,
                                                              tmp_path: Path) -> None:
    script = tmp_path / "samples.py"
    script.write_text(_SAMPLES_SCRIPT)
    coco = data_dir / "coco" / "test_coco.json"
    sets = (f"[{{ann: {coco}, image_files: [000000000785.jpg, 000000040083.jpg, "
            f"000000196141.jpg]}}]")  # 1 + 2 + 4 persons with keypoints
    common = [f"data.train={sets}", "data.val=[]", "run.progress=false", "run.val_every=0",
              "data.workers=0", "data.repeat=1", "run.log_every=1", "optim.max_steps=null",
              "model.deconv_channels=16", "data.cache_images=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", str(script), str(tmp_path), *common],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    def logs(tag: str) -> list[dict]:
        return [json.loads((tmp_path / f"{tag}.rank{r}.json").read_text()) for r in (0, 1)]

    # Run a: what the interrupted run trained on before its checkpoint (steps 1-2), then
    # everything the resumed run drew (steps 3-8): every person once in each epoch.
    first, resumed = logs("a1"), logs("a2")
    assert [v["step"] for v in first] == [3, 3] and [v["step"] for v in resumed] == [8, 8]
    keys = [(e, i) for v in first for e, i, s in v["keys"] if s <= 2]
    keys += [(e, i) for v in resumed for e, i, s in v["keys"]]
    assert all(s >= 3 for v in resumed for *_, s in v["keys"])
    for epoch in (0, 1):
        assert sorted(i for e, i in keys if e == epoch) == list(range(7))
    # The last step of each epoch (steps 4 and 8): rank 0 one crop, rank 1 a stand-in.
    assert [v["stand_ins"] for v in resumed] == [[], [[0, 4], [1, 8]]]
    assert [sum(s == 4 for *_, s in v["keys"]) for v in resumed] == [1, 0]
    # Run b: 21 crops once; the last step (3) took 3 crops on rank 0 and 2 on rank 1.
    b = logs("b")
    assert sorted(i for v in b for _, i, _ in v["keys"]) == list(range(21))
    assert [sum(s == 3 for *_, s in v["keys"]) for v in b] == [3, 2]
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (ck.extra["step"], ck.extra["epoch"], ck.extra["epoch_samples_seen"]) == (3, 1, 0)
