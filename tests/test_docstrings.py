"""Every docstring example in the ``fewray`` package runs and shows what it says (issue 14).

One case per module, so a failure names the module; a module without examples passes. The examples run
with the standard :mod:`doctest` (``ELLIPSIS | NORMALIZE_WHITESPACE``) from the repository root, so the
relative paths they use (``configs/...``) resolve. They are small by contract: tiny tensors, no training,
no Ray cluster, no network, and any file they write goes under :mod:`tempfile`.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path

import pytest

import fewray

REPO = Path(__file__).resolve().parent.parent

# A package that fails to import is kept in the list (walk_packages would silently skip its modules), so its
# case fails with the import error instead of the package's examples going unchecked.
_UNIMPORTABLE: list[str] = []
MODULES = sorted({info.name for info in pkgutil.walk_packages(fewray.__path__, "fewray.", _UNIMPORTABLE.append)}
                 | set(_UNIMPORTABLE))

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_every_module_is_found():
    """The walk finds the package's modules (a broken walk would make every case vacuous)."""
    assert "fewray.data.episodes" in MODULES and "fewray.algorithms.classifiers.protonet" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(REPO)
    ray_before = "ray" in sys.modules and sys.modules["ray"].is_initialized()  # another test's Ray (same worker)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    tests = sorted((t for t in finder.find(module, name) if t.examples), key=lambda t: t.name)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)  # only failing examples write a report
    ray = sys.modules.get("ray")
    assert ray_before or ray is None or not ray.is_initialized(), \
        f"a docstring example of {name} started Ray (keep examples small)"
    if runner.failures:
        pytest.fail(f"{runner.failures} of {runner.tries} docstring examples failed in {name}:\n" + "".join(report),
                    pytrace=False)
