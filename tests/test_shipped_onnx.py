"""The shipped model's ONNX exports (``posefix/assets/demo_model.onnx``, its int8 copy and
their record) are those of the shipped checkpoint: the record names it by its SHA-256, and
a fresh export and quantization of it give the same networks. After a re-ship of
``demo_model.pt`` these fail until ``recipes/demo/ship_onnx.py`` is run.

Tolerances: the same code exporting the same checkpoint with the same torch and ONNX
Runtime (CI pins them: recipes/demo/requirements.txt) writes the same bytes, so the outputs
agree exactly there. Another torch release may order the float32 arithmetic differently:
a float32 export agrees with PyTorch itself to 0.0002 px (tests/test_export.py), so 0.001 px
(and 1e-5 in probabilities) bounds round-off, while any change of weights, gate, blend or
decoding moves keypoints by far more (probabilities and heatmap logits: 1e-5 of their
largest magnitude). The int8 copy must be the same quantization result: the same graph,
every int8 weight within one step (a float32 weight that round-off moved across a rounding
boundary), the scales within round-off, and the outputs within 0.01 px (1e-3 relative)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from posefix.backends import SHIPPED_RECORD, shipped_onnx
from posefix.builtin import default_checkpoint_path

ASSETS = default_checkpoint_path().parent
RERUN = "re-ship the exports: OMP_NUM_THREADS=1 .venv/bin/python recipes/demo/ship_onnx.py"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_record_names_the_shipped_checkpoint_and_files() -> None:
    record = json.loads((ASSETS / SHIPPED_RECORD).read_text())
    for part in ("checkpoint", "float32", "int8"):
        assert _sha256(ASSETS / record[part]["file"]) == record[part]["sha256"], \
            f"{record[part]['file']} changed: {RERUN}"
    assert record["checkpoint"]["file"] == default_checkpoint_path().name
    assert shipped_onnx(default_checkpoint_path()) == ASSETS / record["float32"]["file"]
    assert shipped_onnx(default_checkpoint_path(), int8=True) == ASSETS / record["int8"]["file"]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh float32 export of the shipped checkpoint and its int8 copy, made as
    ship_onnx.py makes them."""
    pytest.importorskip("torch")
    from posefix.export import export_onnx
    from posefix.quantize import quantize_onnx, shipped_calibration

    folder = tmp_path_factory.mktemp("fresh")
    float32 = export_onnx(default_checkpoint_path(), folder / "float32.onnx")
    int8 = quantize_onnx(float32, folder / "int8.onnx",
                         shipped_calibration(float32, required=True))
    return float32, int8


def _outputs(path: Path) -> dict[str, np.ndarray]:
    """Every output of the network in ``path`` on the calibration crops and their mirrors,
    as refinement feeds them."""
    from posefix.onnx_runner import OnnxRefiner
    from posefix.quantize import calibration_batches, load_calibration
    from posefix.spec import load_spec

    runner = OnnxRefiner(path, threads=1)
    cal = load_calibration()
    batches = calibration_batches(cal.crops, cal.poses, load_spec(cal.spec).flip_index, 16)
    outs = [runner.run(x, p) for x, p in batches]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _assert_same_outputs(shipped: Path, fresh: Path, px: float, prob: float) -> None:
    a, b = _outputs(shipped), _outputs(fresh)
    assert sorted(a) == sorted(b)
    for name in a:
        tol = px if name == "coords" else prob * max(1.0, float(np.abs(b[name]).max()))
        assert np.abs(a[name] - b[name]).max() <= tol, f"{shipped.name}: {name}: {RERUN}"


def test_the_shipped_float32_export_is_a_fresh_export(fresh: tuple[Path, Path]) -> None:
    import onnx

    shipped = shipped_onnx(default_checkpoint_path())
    assert shipped is not None, RERUN
    meta = [{p.key: p.value for p in onnx.load(str(f)).metadata_props} for f in (shipped, fresh[0])]
    assert meta[0] == meta[1]
    _assert_same_outputs(shipped, fresh[0], 1e-3, 1e-5)


def test_the_shipped_int8_copy_is_the_same_quantization(fresh: tuple[Path, Path]) -> None:
    import onnx
    from onnx import numpy_helper

    shipped = shipped_onnx(default_checkpoint_path(), int8=True)
    assert shipped is not None, RERUN
    a, b = (onnx.load(str(f)) for f in (shipped, fresh[1]))
    assert [(n.op_type, n.name) for n in a.graph.node] == \
        [(n.op_type, n.name) for n in b.graph.node], RERUN
    assert {p.key: p.value for p in a.metadata_props} == {p.key: p.value for p in b.metadata_props}
    weights = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    assert sorted(weights) == sorted(i.name for i in a.graph.initializer)
    for init in a.graph.initializer:
        mine, theirs = numpy_helper.to_array(init), weights[init.name]
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, init.name
        if mine.dtype.kind in "iu":  # int8 weights, uint8 / int8 zero points
            assert np.abs(mine.astype(np.int64) - theirs).max() <= 1, f"{init.name}: {RERUN}"
        else:
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-7,
                                       err_msg=f"{init.name}: {RERUN}")
    _assert_same_outputs(shipped, fresh[1], 0.01, 1e-3)
