"""core.io.DiskCache: the one helper behind every cache (content key, version, read, recompute, atomic write)."""

from __future__ import annotations

import numpy as np

from core.io import DiskCache, load_json, load_npz, save_json, save_npz


def test_a_value_is_computed_once_then_read_back(tmp_path):
    cache = DiskCache("things", 1, ".json", root=tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"value": 42}

    assert cache.get({"a": 1}, compute, load_json, save_json) == {"value": 42}
    assert cache.get({"a": 1}, compute, load_json, save_json) == {"value": 42}
    assert len(calls) == 1 and len(list((tmp_path / "things").glob("*.json"))) == 1
    cache.get({"a": 2}, compute, load_json, save_json)  # another key: another entry
    assert len(calls) == 2 and len(list((tmp_path / "things").glob("*.json"))) == 2
    assert cache.get({"a": 1}, compute, load_json, save_json, use=False) == {"value": 42} and len(calls) == 3


def test_the_key_and_the_version_name_the_entry(tmp_path):
    one, two = DiskCache("c", 1, ".npz", root=tmp_path), DiskCache("c", 2, ".npz", root=tmp_path)
    assert one.path({"x": 1, "y": 2}) == one.path({"y": 2, "x": 1})  # key order does not matter
    assert one.path({"x": 1}) != one.path({"x": 2}) and one.path({"x": 1}) != two.path({"x": 1})
    assert one.path("k", prefix="model").name.startswith("model-") and one.path("k").suffix == ".npz"
    assert one.path("k").parent == tmp_path / "c"


def test_a_damaged_entry_is_recomputed_and_replaced(tmp_path):
    cache = DiskCache("arrays", 1, ".npz", root=tmp_path)
    value = {"xy": np.arange(6.0).reshape(3, 2)}
    cache.get("k", lambda: value, load_npz, save_npz)
    entry = cache.path("k")
    entry.write_bytes(entry.read_bytes()[:40])  # a cut write
    assert cache.read(entry, load_npz) is None
    fresh = cache.get("k", lambda: {"xy": np.ones(2)}, load_npz, save_npz)
    np.testing.assert_array_equal(fresh["xy"], np.ones(2))
    np.testing.assert_array_equal(cache.read(entry, load_npz)["xy"], np.ones(2))
    assert [p.name for p in (tmp_path / "arrays").iterdir()] == [entry.name]  # no temporary left behind
