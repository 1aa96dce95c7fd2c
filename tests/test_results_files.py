"""Committed benchmark results hold paths relative to the repository (benchmarks/paths.py), never the absolute
paths of the machine that made them."""

import re

from conftest import REPO

ABSOLUTE = re.compile(r"(?<![\w.])(/(?:work|tmp|home|root|Users|mnt|opt)/[^\s\"'`|)]*)")


def test_result_files_have_no_absolute_paths():
    files = sorted(p for p in (REPO / "benchmarks" / "results").rglob("*") if p.suffix in (".json", ".md"))
    assert files, "no result files found: the scan is broken"
    bad = [(str(p.relative_to(REPO)), m.group(1)) for p in files for m in ABSOLUTE.finditer(p.read_text())]
    assert not bad, bad[:10]
