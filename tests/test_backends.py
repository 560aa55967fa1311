"""The default backend's machinery: torch-free CPU refinement, the export cache, the
loader threads and the numpy normalization."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from posefix.crops import iterate_crops
from posefix.imagenet import normalize_array

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "posefix" / "assets"
SAMPLE = ASSETS / "sample"


def test_normalize_array_is_normalize_to_the_bit() -> None:
    torch = pytest.importorskip("torch")
    from posefix.imagenet import normalize

    x = np.random.default_rng(0).integers(0, 256, (3, 17, 11, 3), dtype=np.uint8)
    x[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [1, 128, 254]]
    want = normalize(torch.from_numpy(x), channels_last=True).numpy()
    got = normalize_array(x)
    assert got.shape == (3, 3, 17, 11) and got.dtype == np.float32
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="uint8"):
        normalize_array(x.astype(np.float32))


class _Slow:
    """Items that finish out of order, counting how many were asked for."""

    def __init__(self, n: int, fail_at: int = -1) -> None:
        self.n, self.fail_at, self.asked = n, fail_at, 0
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        with self.lock:
            self.asked += 1
        time.sleep(0.002 * ((i * 7) % 5))
        if i == self.fail_at:
            raise RuntimeError(f"item {i} broke")
        return {"task": i}


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_loader_threads_keep_order(workers: int) -> None:
    assert [d["task"] for d in iterate_crops(_Slow(23), workers)] == list(range(23))
    assert list(iterate_crops(_Slow(0), workers)) == []


def test_loader_threads_raise_the_items_error_and_stop_early() -> None:
    with pytest.raises(RuntimeError, match="item 5 broke"):
        list(iterate_crops(_Slow(40, fail_at=5), 2))
    data = _Slow(100)
    it = iterate_crops(data, 2, ahead=2)
    assert next(it)["task"] == 0
    it.close()  # the consumer stops: the pool is shut down, nothing more is loaded
    assert data.asked <= 6


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)


def test_default_refine_on_a_cpu_never_imports_torch(tmp_path: Path) -> None:
    # The shipped model's exports are shipped: neither run imports torch (600 MiB less
    # memory); the second, in a fresh process, writes the same file.
    code = (
        "import sys\n"
        "from posefix.cli import main\n"
        f"rc = main(['refine', '--gt', r'{SAMPLE / 'annotations.json'}', '--results',\n"
        f"           r'{SAMPLE / 'blazepose.json'}', '--images', r'{SAMPLE}',\n"
        f"           '--out', sys.argv[1] if len(sys.argv) > 1 else 'out.json',\n"
        "           '--device', 'cpu'])\n"
        "print(rc, 'torch' in sys.modules)\n")
    first = _run(code, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.split()[-2:] == ["0", "False"], first.stdout[-500:]
    Path(tmp_path, "out.json").rename(tmp_path / "first.json")
    second = _run(code, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.split()[-2:] == ["0", "False"], second.stdout[-500:]
    assert (tmp_path / "out.json").read_bytes() == (tmp_path / "first.json").read_bytes()


def test_cuda_probe_imports_torch_only_where_a_driver_is(tmp_path: Path) -> None:
    r = _run("import sys, ctypes\n"
             "from posefix.backends import cuda_available, choose_backend\n"
             "try:\n    ctypes.CDLL('libcuda.so.1'); driver = True\n"
             "except OSError:\n    driver = False\n"
             "print(driver, cuda_available(), choose_backend('auto'), 'torch' in sys.modules)",
             tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    driver, cuda, backend, imported = r.stdout.split()
    if driver == "False":  # a CPU machine: no torch for the answer, ONNX Runtime by default
        assert (cuda, backend, imported) == ("False", "onnxruntime", "False")
    else:
        import torch

        assert cuda == str(torch.cuda.is_available())
        assert backend == ("torch" if cuda == "True" else "onnxruntime")


def test_auto_runs_the_int8_copy_where_the_calibration_set_fits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, misfit_checkpoint: Path) -> None:
    from posefix.refiner import load_refiner

    monkeypatch.setenv("POSEFIX_CACHE", str(tmp_path / "cache"))
    shipped = load_refiner(None, "auto", device="cpu")  # the shipped model: 128x96 COCO-17
    assert shipped.arrays and shipped.description.startswith("onnxruntime int8, the export")
    assert shipped.predict.path == ASSETS / "demo_model-int8.onnx"  # shipped with it
    assert "posefix.quantization" in shipped.predict.metadata
    float32 = load_refiner(None, "onnxruntime", device="cpu")
    assert float32.description.startswith("onnxruntime, the export")
    assert float32.predict.path == ASSETS / "demo_model.onnx"
    assert not (tmp_path / "cache").exists()  # nothing exported
    # the int8 network stays close to the float32 one on the calibration crops
    from posefix.quantize import load_calibration

    cal = load_calibration()
    a = shipped.refine_batch(cal.crops[:8], cal.poses[:8])
    b = float32.refine_batch(cal.crops[:8], cal.poses[:8])
    assert np.median(np.abs(a[0] - b[0])) < 0.5 and np.abs(a[1] - b[1]).max() < 0.1

    import posefix.refiner as refiner_mod

    with monkeypatch.context() as m:  # a CPU whose int8 products may saturate: float32
        m.setattr(refiner_mod, "int8_without_saturation", lambda: False)
        old_cpu = load_refiner(None, "auto", device="cpu")
        assert old_cpu.predict.path == ASSETS / "demo_model.onnx"
        assert load_refiner(None, "onnxruntime-int8", device="cpu").predict.path == \
            ASSETS / "demo_model-int8.onnx"

    tiny = misfit_checkpoint  # 64x48: auto falls back to float32, int8 refuses
    fallback = load_refiner(tiny, "auto", device="cpu")
    assert fallback.arrays and not fallback.description.startswith("onnxruntime int8")
    assert "-int8-" not in fallback.predict.path.name
    with pytest.raises(ValueError, match="calibration set is for 128x96 coco17.*64x48"):
        load_refiner(tiny, "onnxruntime-int8", device="cpu")


def test_int8_of_a_given_onnx_file_is_refused(tmp_path: Path) -> None:
    from posefix.errors import InputError
    from posefix.refiner import Refiner

    with pytest.raises(InputError, match="quantize it"):
        Refiner.from_onnx(tmp_path / "model.onnx", int8=True)


@pytest.fixture(scope="module")
def resaved_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model saved again (another file: not the shipped one, so exported)."""
    pytest.importorskip("torch")
    from posefix.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(ASSETS / "demo_model.pt")
    return save_checkpoint(tmp_path_factory.mktemp("resaved") / "resaved.pt", model=ckpt.model,
                           config=ckpt.config, spec=ckpt.spec, half=True)


def test_a_cache_that_cannot_be_written_gives_a_temporary_export(
        tmp_path: Path, resaved_checkpoint: Path) -> None:
    # In a process of its own: the temporary export is removed when that process exits.
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    env = {**os.environ, "POSEFIX_CACHE": str(blocked / "cache")}  # mkdir fails under a file
    code = ("from posefix.refiner import load_refiner; "
            f"p = load_refiner(r'{resaved_checkpoint}', 'auto', device='cpu').predict.path; "
            "print(p, p.is_file())")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    printed, was_file = proc.stdout.split()
    path = Path(printed)
    assert was_file == "True" and "-int8-" in path.name and blocked not in path.parents
    assert path.parent.name.startswith("posefix-onnx-")  # the export's temporary folder
    assert not path.parent.exists()  # gone with the process


def test_the_export_cache_is_keyed_by_the_code_that_shapes_it(
        misfit_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A working copy whose model or export code changed must not run a stale cached export.
    from posefix import backends

    monkeypatch.setenv("POSEFIX_CACHE", str(tmp_path / "cache"))
    first = backends.cached_onnx(misfit_checkpoint)
    stamp = first.stat().st_mtime_ns
    assert backends.cached_onnx(misfit_checkpoint) == first  # a hit: not exported again
    assert first.stat().st_mtime_ns == stamp
    real = backends._source_hash
    monkeypatch.setattr(backends, "_source_hash",
                        lambda names: real(names) + ("x" if "model.py" in names else ""))
    changed = backends.cached_onnx(misfit_checkpoint)
    assert changed != first and changed.is_file()
    assert backends._source_hash(("no_such_module.py",)) == ""


def test_the_shipped_exports_serve_the_shipped_checkpoint_wherever_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resaved_checkpoint: Path) -> None:
    from posefix import backends

    monkeypatch.setenv("POSEFIX_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "copy.pt"
    copy.write_bytes((ASSETS / "demo_model.pt").read_bytes())
    assert backends.cached_onnx(copy) == ASSETS / "demo_model.onnx"  # the same bytes
    assert backends.cached_int8(ASSETS / "demo_model.onnx") == ASSETS / "demo_model-int8.onnx"
    assert backends.shipped_onnx(copy, int8=True) == ASSETS / "demo_model-int8.onnx"
    assert not (tmp_path / "cache").exists()
    # another gate is the refiner's decoding: the same shipped export, nothing exported
    from posefix.refiner import Refiner

    gated = Refiner.from_onnx(checkpoint=copy, error_gate=0.3, int8=False)
    assert gated.predict.path == ASSETS / "demo_model.onnx" and gated.error_gate == 0.3
    assert not (tmp_path / "cache").exists()
    # the same weights in another file: exported into the cache
    assert backends.shipped_onnx(resaved_checkpoint) is None
    other = backends.cached_onnx(resaved_checkpoint)
    assert other.parent == tmp_path / "cache" / "onnx"
    assert backends.cached_int8(other).parent == other.parent
