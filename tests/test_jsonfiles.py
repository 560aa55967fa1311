"""JSON files: read whole or streamed a block at a time, written atomically with the umask's mode."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from posefix.errors import InputError
from posefix.jsonfiles import (
    atomic_write,
    iter_json_list,
    iter_json_object,
    read_json,
    round_like_python,
    write_json_atomic,
)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        read_json(tmp_path / "nope.json")
    assert str(e.value) == f"{tmp_path / 'nope.json'}: file does not exist"
    assert e.value.path == str(tmp_path / "nope.json") and e.value.index is None


def test_write_json_atomic_leaves_nothing_half_written(tmp_path: Path) -> None:
    path = tmp_path / "out" / "res.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        # json.dump fails in the middle: after writing the first entries
        write_json_atomic(path, {"a": list(range(10000)), "b": object()})
    assert json.loads(path.read_text()) == {"a": 1}  # the old file is intact
    assert os.listdir(path.parent) == ["res.json"]  # no temporary left behind
    loop: list = [1, 2]
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        write_json_atomic(tmp_path / "new.json", loop)
    assert not (tmp_path / "new.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        paths = [write_json_atomic(tmp_path / "a.json", [1]),
                 atomic_write(tmp_path / "b.bin", lambda f: f.write(b"x"), binary=True)]
        fresh = tmp_path / "plain.txt"
        fresh.write_text("as open() makes it")
    finally:
        os.umask(old)
    for path in [*paths, fresh]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def _tricky_entries(n: int, rng: np.random.Generator) -> list:
    """Results-like entries with what could fool a block parser: nested objects, strings
    holding ``},`` and brackets, unicode, exponents, big and negative integers."""
    out = []
    for i in range(n):
        e = {"image_id": int(rng.integers(-5, 2 ** 62)), "keypoints":
             rng.normal(0, 10.0 ** int(rng.integers(-8, 8)), 6).tolist(), "score": 1e-7 * i}
        if i % 3 == 0:
            e["extra"] = {"note": 'a"}, {"b": [1], "c": {}},', "deep": {"x": [{"y": i}]}}
        if i % 4 == 1:
            e["name"] = "é€😀 },]" * (i % 5)
        out.append(e)
    return out


@pytest.mark.parametrize("block", [5, 64, 1 << 22])
def test_iter_json_list_reads_any_list_in_blocks(tmp_path: Path, block: int) -> None:
    rng = np.random.default_rng(block)
    entries = _tricky_entries(60, rng) + [3, "x", [1, {"a": "}"}], None, 1.5e300]
    for i, kw in enumerate([{}, {"indent": 2}, {"separators": (",", ":")},
                            {"ensure_ascii": False, "indent": "\t"}]):
        path = tmp_path / f"l{i}.json"
        path.write_text(" \n" + json.dumps(entries, **kw) + "\n", encoding="utf-8")
        got = [e for chunk in iter_json_list(path, block=block) for e in chunk]
        assert got == json.loads(path.read_text(encoding="utf-8"))
    path.write_text("[ ]")
    assert [e for c in iter_json_list(path, block=block) for e in c] == []


@pytest.mark.parametrize("text", ['{not json', '[{"a": 1},', '[{"a": 1} {"b": 2}]', '[{"a": 1}]x',
                                  '[{"a": 1},\n {"b": tru}]', '[{"a": 1}, ]',
                                  '[{"a": 1}, {"b": 2}, {"c": "x}, {"}'])
def test_iter_json_list_errors_name_line_and_column_as_json_does(
        tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError) as streamed:
        for _ in iter_json_list(path, block=4):
            pass
    with pytest.raises(InputError) as whole:
        read_json(path)
    assert str(streamed.value) == str(whole.value)


def test_round_like_python_is_pythons_round() -> None:
    rng = np.random.default_rng(0)
    ties = np.arange(-20000, 20000) / 1e4 + 0.00005  # every one near a half
    values = np.concatenate([rng.uniform(-1e4, 1e4, 20000), ties, [
        0.1, 1e-7, 123.456789, 2.675, 1.00005, 5e-5, -0.0, 1e15, 1e300, 2 ** 52 + 0.5]])
    for nd in (3, 4):
        got = round_like_python(values, nd)
        assert got.tolist() == [round(float(v), nd) for v in values]


@pytest.mark.parametrize("block", [3, 64, 1 << 22])
def test_iter_json_object_yields_members_and_lists_as_chunks(tmp_path: Path, block: int) -> None:
    rng = np.random.default_rng(block)
    data = {"info": {"note": '"}, ]'}, "images": _tricky_entries(20, rng), "skipped": [1, [2]],
            "n": 3, "annotations": _tricky_entries(30, rng), "empty": []}
    path = tmp_path / "o.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    got = {}
    for key, value in iter_json_object(path, block):
        if key == "skipped":
            continue  # a list the caller leaves is drained by the reader
        got[key] = [e for c in value for e in c] if isinstance(value, Iterator) else value
    assert got == {k: v for k, v in data.items() if k != "skipped"}
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="not a JSON object"):
        list(iter_json_object(path, block))
    path.write_text('{"a": [1, 2] "b": 3}')
    with pytest.raises(InputError, match="Expecting ',' delimiter"):
        list(iter_json_object(path, block))
