"""The decoded-image cache of local catalogs: filled once, read back identically, invalidated by a rewrite."""

import os

import numpy as np
import pyarrow.parquet as pq

from fewray.data.catalog import load_split, write_split


def _small_catalog(src, dst, rows: slice):
    table = pq.read_table(src / "val.parquet", columns=["image", "label", "class_name"]).slice(rows.start, rows.stop - rows.start)
    write_split(dst, "val", {k: table.column(k).to_pylist() for k in ("image", "label", "class_name")})


def test_decoded_cache_is_reused_and_invalidated(omniglot_catalog, tmp_path):
    _small_catalog(omniglot_catalog, tmp_path, slice(0, 60))
    first = load_split(str(tmp_path), "val", 1)
    cached = list((tmp_path / ".decoded").glob("val.c1.*.npy"))
    assert len(cached) == 1
    again = load_split(str(tmp_path), "val", 1)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.images, load_split(str(tmp_path), "val", 1, cache=False).images)
    assert first.class_names == again.class_names

    # rewriting the split (other rows) must not serve the stale array
    st = os.stat(tmp_path / "val.parquet")
    _small_catalog(omniglot_catalog, tmp_path, slice(60, 140))
    os.utime(tmp_path / "val.parquet", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = load_split(str(tmp_path), "val", 1)
    assert fresh.images.shape[0] == 80
    np.testing.assert_array_equal(fresh.images, load_split(str(tmp_path), "val", 1, cache=False).images)
    assert len(list((tmp_path / ".decoded").glob("val.c1.*.npy"))) == 1
