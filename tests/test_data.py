"""Training samples: every shared dataset, layout conversion, crop geometry, flips, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from posefix.config import DatasetConfig, load_config
from posefix.data import (
    PoseFixDataset,
    ResumableSampler,
    SampleOptions,
    StringArray,
    build_dataset,
    load_persons,
    worker_init,
)
from posefix.errors import InputError
from posefix.geometry import apply_affine
from posefix.io import convert_mpii, load_ground_truth
from posefix.spec import convert_layout, load_spec

COCO17 = load_spec("coco17")
SETS = {  # folder -> (annotation file, image root or None)
    "coco": ("coco/test_coco.json", None),
    "crowdpose": ("crowdpose/test_crowdpose.json", None),
    "ochuman": ("ochuman/test_ochuman.json", None),
    "posetrack18": ("posetrack18/annotations/test_posetrack18_val.json", "posetrack18"),
    "aic": ("aic/test_aic.json", None),
}


def _ds(shared: Path, name: str) -> DatasetConfig:
    ann, images = SETS[name]
    return DatasetConfig(ann=str(shared / ann), images=str(shared / images) if images else None)


def _dataset(table, train: bool = True, size=(128, 96), **kw) -> PoseFixDataset:
    return PoseFixDataset(table, size, train=train, options=SampleOptions(seed=3, **kw))


def _check_sample(s: dict, size=(128, 96), k: int = 17) -> None:
    h, w = size
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.uint8
    assert s["input_pose"].shape == (k, 3) and s["input_pose"].dtype == torch.float32
    assert s["target"].shape == (k, 2) and s["target_valid"].shape == (k,)
    t, v = s["target"].numpy(), s["target_valid"].numpy()
    assert ((t[v] >= 0) & (t[v] < [w, h])).all()
    assert (t[~v] == 0).all()
    p = s["input_pose"].numpy()
    on = p[:, 2] > 0
    assert ((p[on, :2] >= 0) & (p[on, :2] < [w, h])).all()
    assert set(np.unique(p[:, 2])) <= {0.0, 1.0}


@pytest.mark.parametrize("name", sorted(SETS))
def test_samples_from_every_shared_dataset(data_dir: Path, name: str) -> None:
    table = load_persons([_ds(data_dir, name)], "coco17")
    gt = load_ground_truth(data_dir / SETS[name][0],
                           image_root=data_dir / SETS[name][1] if SETS[name][1] else None)
    usable = ~gt.iscrowd & (convert_layout(gt.keypoints, gt.spec, COCO17, zero_ignored=True)[..., 2] > 0).any(1)
    assert len(table) == int(usable.sum()) > 0
    assert table.keypoints.shape == (len(table), 17, 3)
    ds = _dataset(table)
    for i in range(len(table)):
        s = ds[(0, i)]
        _check_sample(s)
        # Targets are the ground truth mapped by the sample's own affine (and flip order).
        m = s["meta"]["affine"].numpy()
        expect = apply_affine(table.keypoints[i, None, :, :2], m[None])[0]
        valid = table.keypoints[i, :, 2] > 0
        if bool(s["meta"]["flipped"]):
            expect, valid = expect[COCO17.flip_index], valid[COCO17.flip_index]
        v = s["target_valid"].numpy()
        assert not (v & ~valid).any()
        np.testing.assert_allclose(s["target"].numpy()[v], expect[v], atol=1e-3)


def test_mpii_after_conversion(data_dir: Path, tmp_path: Path) -> None:
    ann = tmp_path / "mpii.json"
    ann.write_text(json.dumps(convert_mpii(data_dir / "mpii" / "test_mpii.json")))
    table = load_persons([DatasetConfig(ann=str(ann), images=str(data_dir / "mpii"),
                                        spec="mpii16")], "coco17")
    assert len(table) == 5
    names = set(load_spec("mpii16").keypoints) & set(COCO17.keypoints)
    labelled = (table.keypoints[..., 2] > 0).any(0)
    assert {COCO17.keypoints[i] for i in np.flatnonzero(labelled)} <= names
    _check_sample(_dataset(table)[(0, 0)])


def test_layout_conversion_by_name(data_dir: Path) -> None:
    # CrowdPose: same joints in another order; head/neck have no COCO counterpart.
    crowd = load_ground_truth(data_dir / SETS["crowdpose"][0])
    table = load_persons([_ds(data_dir, "crowdpose")], "coco17")
    rows = [int(np.flatnonzero(crowd.ann_ids == a)[0]) for a in table.ann_ids]
    src = crowd.keypoints[rows]
    np.testing.assert_array_equal(table.keypoints[:, COCO17.index("left_shoulder")],
                                  src[:, crowd.spec.index("left_shoulder")])
    np.testing.assert_array_equal(table.keypoints[:, COCO17.index("right_ankle")],
                                  src[:, crowd.spec.index("right_ankle")])
    assert (table.keypoints[:, :5, 2] == 0).all()  # no face keypoints in CrowdPose
    # AIC names ("Right Shoulder") are normalized and mapped.
    aic = load_ground_truth(data_dir / SETS["aic"][0])
    assert aic.spec.name == "aic14"
    t2 = load_persons([_ds(data_dir, "aic")], "coco17")
    rows = [int(np.flatnonzero(aic.ann_ids == a)[0]) for a in t2.ann_ids]
    np.testing.assert_array_equal(t2.keypoints[:, COCO17.index("right_wrist")],
                                  aic.keypoints[rows, aic.spec.index("right_wrist")])


def test_posetrack_head_points_never_land_on_coco_eyes(data_dir: Path) -> None:
    pt = load_ground_truth(data_dir / SETS["posetrack18"][0])
    assert (pt.keypoints[:, 1:3, 2] > 0).any()  # head_bottom/head_top are labelled there
    table = load_persons([_ds(data_dir, "posetrack18")], "coco17")
    eyes = [COCO17.index("left_eye"), COCO17.index("right_eye")]
    ears = [COCO17.index("left_ear"), COCO17.index("right_ear")]
    assert (table.keypoints[:, eyes + ears, 2] == 0).all()
    assert (table.keypoints[:, COCO17.index("nose"), 2] > 0).any()
    ds = _dataset(table)
    for i in range(len(table)):
        s = ds[(1, i)]
        assert not s["target_valid"][eyes + ears].any()
        assert not s["input_pose"][eyes + ears, 2].any()


def test_ignored_keypoints_are_never_targets(data_dir: Path) -> None:
    # With PoseTrack's own layout as the model's, its (ignored) ears are never valid.
    table = load_persons([_ds(data_dir, "posetrack18")], "posetrack17")
    ds = _dataset(table)
    spec = load_spec("posetrack17")
    for i in range(len(table)):
        assert not ds[(0, i)]["target_valid"].numpy()[list(spec.ignore)].any()
    # ...while its head_bottom/head_top, which COCO-17 lacks, are targets here.
    assert any(ds[(0, i)]["target_valid"].numpy()[[1, 2]].any() for i in range(len(table)))


def test_ignore_keypoints_per_dataset(data_dir: Path) -> None:
    from posefix.config import ConfigError

    ds = _ds(data_dir, "aic")
    full = load_persons([ds], "coco17")
    hips = [COCO17.index("left_hip"), COCO17.index("right_hip")]
    assert (full.keypoints[:, hips, 2] > 0).any()
    ds.ignore_keypoints = ["left_hip", "right_hip"]
    table = load_persons([ds], "coco17")
    assert (table.keypoints[:, hips, 2] == 0).all()
    others = [i for i in range(17) if i not in hips]
    np.testing.assert_array_equal(table.keypoints[:, others], full.keypoints[:, others])
    sample = _dataset(table)[(0, 0)]
    assert not sample["target_valid"].numpy()[hips].any()
    ds.ignore_keypoints = ["left_hipp"]
    with pytest.raises(ConfigError, match="test_aic.json.*left_hipp"):
        load_persons([ds], "coco17")


def test_crowd_keypointless_and_split(data_dir: Path) -> None:
    coco = _ds(data_dir, "coco")
    table = load_persons([coco], "coco17")
    gt = load_ground_truth(coco.ann)
    assert len(table) == int((gt.num_labelled > 0).sum()) < len(gt)  # keypoint-less skipped
    split = DatasetConfig(ann=coco.ann, image_files=["000000040083.jpg"])
    t1 = load_persons([split], "coco17")
    assert set(t1.image_ids.tolist()) == {40083} and len(t1) == 2
    assert set(t1.gts[0].images) == {40083}
    with pytest.raises(InputError, match="nope.jpg"):
        load_persons([DatasetConfig(ann=coco.ann, image_files=["nope.jpg"])], "coco17")


def test_exclude_image_files_holds_images_out(data_dir: Path) -> None:
    coco = _ds(data_dir, "coco")
    full = load_persons([coco], "coco17")
    out = DatasetConfig(ann=coco.ann, exclude_image_files=["000000040083.jpg"])
    t = load_persons([out], "coco17")
    assert 40083 in set(full.image_ids.tolist())
    assert set(t.image_ids.tolist()) == set(full.image_ids.tolist()) - {40083}
    assert len(t) == len(full) - 2 and 40083 not in t.gts[0].images
    both = DatasetConfig(ann=coco.ann, image_files=["000000040083.jpg", "000000196141.jpg"],
                         exclude_image_files=["000000040083.jpg"])
    assert set(load_persons([both], "coco17").image_ids.tolist()) == {196141}
    with pytest.raises(InputError, match="nope.jpg"):
        load_persons([DatasetConfig(ann=coco.ann, exclude_image_files=["nope.jpg"])], "coco17")


def test_overlapping_persons_feed_synthesis(data_dir: Path) -> None:
    table = load_persons([_ds(data_dir, "coco")], "coco17", overlap_iou=0.1)
    counts = np.diff(table.others_ptr)
    assert counts.sum() == len(table.others_kp) == len(table.others_area)
    assert counts.max() > 0
    i = int(np.argmax(counts))
    others, _ = table.others(i)
    assert (others[..., 2] > 0).any(-1).all()  # only persons with keypoints
    assert not any(np.array_equal(o, table.keypoints[i]) for o in others)
    none = load_persons([_ds(data_dir, "coco")], "coco17", overlap_iou=1.01)
    assert len(none.others_kp) == 0


def test_estimator_results_fill_unlabelled_keypoints(coco_dir: Path) -> None:
    ds = DatasetConfig(ann=str(coco_dir / "test_coco.json"),
                       results=str(coco_dir / "blazepose_gtboxes.json"))
    table = load_persons([ds], "coco17")
    assert table.estimated is not None and table.estimated.shape == table.keypoints.shape
    assert (table.estimated[..., 2] > 0).any()


def _synthetic_set(tmp_path: Path) -> Path:
    """One person whose 17 keypoints are painted as 9x9 blocks, colour = keypoint index."""
    img = np.zeros((240, 200, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(60, 140, 17), rng.uniform(40, 200, 17)], 1)
    # Keep the blocks apart so each target reads its own colour.
    while (np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(17) * 99).min() < 14:
        pts = np.stack([rng.uniform(60, 140, 17), rng.uniform(40, 200, 17)], 1)
    for k, (x, y) in enumerate(pts.round().astype(int)):
        img[y - 4:y + 5, x - 4:x + 5] = (0, 255, 12 * (k + 1))  # BGR: red channel = code
    cv2.imwrite(str(tmp_path / "a.png"), img)
    kp = np.concatenate([pts.round(), np.full((17, 1), 2.0)], 1)
    lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 240}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "keypoints": kp.reshape(-1).tolist(), "num_keypoints": 17,
                            "bbox": [*lo.tolist(), *(hi - lo).tolist()],
                            "area": float(np.prod(hi - lo))}],
           "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoints)}]}
    (tmp_path / "a.json").write_text(json.dumps(ann))
    return tmp_path / "a.json"


def test_targets_land_on_their_pixels_and_flip_swaps_pairs(tmp_path: Path) -> None:
    table = load_persons([DatasetConfig(ann=str(_synthetic_set(tmp_path)))], "coco17")
    ds = _dataset(table, size=(256, 192), repeat=40)
    flips = 0
    for i in range(len(ds)):
        s = ds[(0, i)]
        img = s["image"].numpy()  # RGB
        flipped = bool(s["meta"]["flipped"])
        flips += flipped
        for k in np.flatnonzero(s["target_valid"].numpy()):
            x, y = np.rint(s["target"][k].numpy()).astype(int)
            # After a flip, keypoint k sits where its mirror partner was painted.
            painted = COCO17.flip_index[k] if flipped else k
            assert img[1, y, x] > 200, (i, k)
            assert abs(int(img[0, y, x]) - 12 * (painted + 1)) <= 4, (i, k, flipped)
    assert 0 < flips < len(ds)


def test_input_pose_uses_the_image_affine(data_dir: Path) -> None:
    table = load_persons([_ds(data_dir, "coco")], "coco17")
    ds = _dataset(table)
    for i in range(len(table)):
        s = ds[(2, i)]
        m = s["meta"]["affine"].numpy()
        src = s["meta"]["input_image"].numpy()
        expect = apply_affine(src[None, :, :2], m[None])[0]
        if bool(s["meta"]["flipped"]):
            expect, src = expect[COCO17.flip_index], src[COCO17.flip_index]
        on = s["input_pose"][:, 2].numpy() > 0
        assert not (on & (src[:, 2] == 0)).any()
        np.testing.assert_allclose(s["input_pose"][on, :2].numpy(), expect[on], atol=1e-3)


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "input_pose", "target",
                                                   "target_valid"))


def test_samples_are_a_function_of_seed_epoch_index(data_dir: Path) -> None:
    table = load_persons([_ds(data_dir, "coco"), _ds(data_dir, "ochuman")], "coco17")
    a, b = _dataset(table), _dataset(table)
    n = len(a)
    assert all(_equal(a[(4, i)], b[(4, i)]) for i in range(n))
    assert not all(_equal(a[(4, i)], a[(5, i)]) for i in range(n))  # epochs differ
    other_seed = PoseFixDataset(table, (128, 96), train=True, options=SampleOptions(seed=4))
    assert not all(_equal(a[(4, i)], other_seed[(4, i)]) for i in range(n))
    # Workers and order do not matter.
    sampler = ResumableSampler(a, shuffle=True, seed=0)
    sampler.set_epoch(4)
    keys = list(sampler)
    loader = DataLoader(a, batch_size=3, sampler=sampler, num_workers=2,
                        worker_init_fn=worker_init)
    got = [s for batch in loader for s in _unbatch(batch)]
    for (e, i), s in zip(keys, got, strict=True):
        assert e == 4
        assert _equal(s, a[(4, i)])


def _unbatch(batch: dict) -> list[dict]:
    n = len(batch["image"])
    return [{k: batch[k][j] for k in ("image", "input_pose", "target", "target_valid")}
            for j in range(n)]


def test_validation_samples_are_fixed_and_unaugmented(data_dir: Path) -> None:
    table = load_persons([_ds(data_dir, "coco")], "coco17")
    val = _dataset(table, train=False)
    for i in range(len(val)):
        s = val[(0, i)]
        assert _equal(s, val[(9, i)]) and _equal(s, val[i])
        assert not bool(s["meta"]["flipped"])
        m = s["meta"]["affine"].numpy()
        assert abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12  # no rotation
        _check_sample(s)


def test_resumable_sampler(data_dir: Path) -> None:
    table = load_persons([_ds(data_dir, "coco")], "coco17")
    ds = _dataset(table, repeat=3)
    full = ResumableSampler(ds, seed=1)
    full.set_epoch(2)
    keys = list(full)
    assert sorted(i for _, i in keys) == list(range(len(ds)))
    tail = ResumableSampler(ds, seed=1, start=7)
    tail.set_epoch(2)
    assert list(tail) == keys[7:] and len(tail) == len(keys) - 7
    full.set_epoch(3)
    assert [i for _, i in full] != [i for _, i in keys]
    ranks = [ResumableSampler(ds, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    a, b = ([i for _, i in r] for r in ranks)
    assert len(a) == len(b) and set(a) | set(b) == set(range(len(ds)))


def test_build_dataset_from_config(data_dir: Path) -> None:
    cfg = load_config("tiny_cpu", [
        f"data.train=[{{ann: {data_dir}/coco/test_coco.json}}]",
        f"data.val=[{{ann: {data_dir}/ochuman/test_ochuman.json}}]", "data.repeat=2"])
    train = build_dataset(cfg, "train")
    val = build_dataset(cfg, "val")
    assert len(train) == 2 * len(train.table) and train.train and not val.train
    assert val.table.gts[0].spec.name == "coco17"
    _check_sample(train[(0, 0)], size=cfg.model.input_size)
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg, "test")
    assert train.crop_from == "gt" and val.crop_from == "pose"
    cfg = load_config("tiny_cpu", [
        f"data.train=[{{ann: {data_dir}/coco/test_coco.json}}]", "data.crop_from=pose"])
    assert build_dataset(cfg, "train").crop_from == "pose"
    from posefix.config import ConfigError

    with pytest.raises(ConfigError, match="data.crop_from"):
        load_config("tiny_cpu", ["data.crop_from=box"])


def test_image_size_read_from_the_file_when_the_json_lacks_it(tmp_path: Path) -> None:
    ann_path = _synthetic_set(tmp_path)
    ann = json.loads(ann_path.read_text())
    del ann["images"][0]["width"], ann["images"][0]["height"]
    ann["annotations"][0]["bbox"] = [150.0, 200.0, 100.0, 100.0]  # past the 200x240 image
    ann_path.write_text(json.dumps(ann))
    table = load_persons([DatasetConfig(ann=str(ann_path))], "coco17")
    np.testing.assert_allclose(table.boxes[0], [150.0, 200.0, 49.0, 39.0])


def test_split_field_restricts_a_set(shared_data: Path) -> None:
    lsp = str(shared_data / "lsp" / "lsp14.json")
    train = load_persons([DatasetConfig(ann=lsp, split="train")], "coco17")
    test = load_persons([DatasetConfig(ann=lsp, split="test")], "coco17")
    assert len(train) == 1000 and len(test) == 800
    assert train.image_ids.max() == 1000 and test.image_ids.min() == 1001
    assert set(train.gts[0].images) == set(range(1, 1001))
    # LSP's 12 body joints land on COCO's by name; the face stays unlabelled
    assert (train.keypoints[:, :5, 2] == 0).all() and (train.keypoints[:, 5:, 2] > 0).mean() > 0.9
    both = load_persons([DatasetConfig(ann=lsp, split="train",
                                       image_files=["images/im0001.jpg", "images/im1001.jpg"])],
                        "coco17")
    assert both.image_ids.tolist() == [1]  # the file list within the split
    with pytest.raises(InputError, match="lsp14.json.*split 'val'"):
        load_persons([DatasetConfig(ann=lsp, split="val")], "coco17")


class _Keys(torch.utils.data.Dataset):
    """A dataset of ``n`` samples that are their own ``(epoch, index)`` keys."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int]:
        return key


def _run_epoch(n: int, world: int, bs: int, accum: int, epoch: int, start: int = 0
               ) -> list[list[list[int]]]:
    """What ``posefix.train`` draws in one epoch from ``start``: per step, per rank, the
    indices of its micro-batches (taken from the real DataLoader as train.py takes them)."""
    from posefix.train import micro_batches

    ds = _Keys(n)
    samplers = [ResumableSampler(ds, num_replicas=world, rank=r, seed=5) for r in range(world)]
    iters = []
    for s in samplers:
        s.set_epoch(epoch)
        s.set_start(start)
        iters.append(iter(DataLoader(ds, batch_size=bs, sampler=s, collate_fn=list)))
    steps = {s.steps(bs * accum) for s in samplers}
    assert len(steps) == 1  # every rank runs the same number of steps: no deadlock
    out = []
    for k in range(steps.pop()):
        per_rank, totals = [], set()
        for s, it in zip(samplers, iters, strict=True):
            sizes, total = micro_batches(s, k, bs, accum)
            totals.add(total)
            keys = []
            for size in sizes:
                if size:
                    batch = next(it)
                    assert len(batch) == size and all(e == epoch for e, _ in batch)
                    keys += [i for _, i in batch]
            per_rank.append(keys)
        assert len(totals) == 1 and totals.pop() == sum(len(x) for x in per_rank)
        out.append(per_rank)
    for it in iters:  # nothing left over
        assert next(it, None) is None
    return out


@pytest.mark.parametrize("n", [1, 5, 7, 12, 13, 21, 64, 65, 149])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("bs,accum", [(1, 1), (2, 1), (3, 2), (5, 1)])
def test_every_sample_once_per_epoch_across_ranks_and_resumes(n: int, world: int, bs: int,
                                                               accum: int) -> None:
    g = world * bs * accum
    for epoch in (0, 1):
        steps = _run_epoch(n, world, bs, accum, epoch)
        flat = [i for step in steps for rank in step for i in rank]
        assert sorted(flat) == list(range(n))  # exactly once, the uneven last step included
        assert len(steps) == -(-n // g)
        full = [sum(map(len, s)) == g for s in steps]
        assert all(full[:-1]) and (full[-1] or n % g)
        # Resuming at any step boundary gives the very same remaining steps (same ranks),
        # and with another number of processes the remaining samples exactly once.
        for k in sorted({1, len(steps) // 2, len(steps) - 1} - {0}):
            assert _run_epoch(n, world, bs, accum, epoch, start=k * g) == steps[k:]
            other = _run_epoch(n, world % 4 + 1, bs, accum, epoch, start=k * g)
            done = [i for step in steps[:k] for rank in step for i in rank]
            rest = [i for step in other for rank in step for i in rank]
            assert sorted(done + rest) == list(range(n))


def test_sampler_keeps_distributed_samplers_order_where_nothing_is_padded() -> None:
    from torch.utils.data import DistributedSampler

    ds = _Keys(24)
    for world in (1, 2, 3, 4):
        for r in range(world):
            ours = ResumableSampler(ds, num_replicas=world, rank=r, seed=7)
            theirs = DistributedSampler(ds, num_replicas=world, rank=r, seed=7)
            ours.set_epoch(3)
            theirs.set_epoch(3)
            assert [i for _, i in ours] == list(theirs) and len(ours) == len(theirs)
    # 10 samples on 4 ranks: 3, 3, 2, 2 (DistributedSampler pads to 3 each by repeating)
    assert [len(ResumableSampler(_Keys(10), num_replicas=4, rank=r)) for r in range(4)] == \
        [3, 3, 2, 2]


def test_string_array_is_a_read_only_sequence_of_str(data_dir: Path) -> None:
    names = ["/data/a.jpg", "/données/ß ü.jpg", "", "/x/" + "y" * 300]
    a = StringArray(names)
    assert len(a) == 4 and list(a) == names and a == names and a[-1] == names[-1]
    assert a[1:3] == names[1:3] and all(type(x) is str for x in a)
    with pytest.raises(IndexError):
        a[4]
    assert len(StringArray()) == 0
    table = load_persons([_ds(data_dir, "coco")], "coco17")
    assert isinstance(table.image_paths, StringArray)
    assert all(Path(p).is_file() for p in table.image_paths)


class _FreezeCount(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        import gc

        return gc.get_freeze_count()


def test_loader_workers_freeze_what_they_inherit() -> None:
    # A garbage collection in a forked worker would otherwise walk, and so copy, every
    # object the worker inherited from the main process.
    loader = DataLoader(_FreezeCount(), batch_size=None, num_workers=1,
                        worker_init_fn=worker_init)
    assert next(iter(loader)) > 1000
