"""Seams from DESIGN.md, read from the source (AST): what each package may import, lazy imports included;
no top-level `platform` package."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "fewray"
# package -> top-level names (and fewray subpackages) its modules must never import
FORBIDDEN = {
    "core": ("torch", "torchvision", "ray", "mlflow", "fewray.algorithms", "fewray.platform"),
    "algorithms": ("ray", "mlflow", "fewray.platform", "fewray.tasks", "fewray.evaluation"),
    "evaluation": ("ray", "mlflow", "fewray.platform", "fewray.tasks"),
    "tasks": ("mlflow", "fewray.platform.train", "fewray.platform.tune", "fewray.platform.metatest", "fewray.apis"),
    # catalogs, sources, samplers, row builders, image loading: no Ray, no MLflow, nothing of the runtime
    "data": ("ray", "mlflow", "fewray.platform", "fewray.tasks", "fewray.algorithms", "fewray.apis"),
    # the inference APIs are the top layer: the runtime never imports them
    "platform": ("fewray.apis",),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file, at any depth (a lazy import inside a function counts)."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _hits(module: str, banned: tuple[str, ...]) -> bool:
    return any(module == b or module.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_their_layer(package):
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files, f"no modules in fewray/{package}: the scan is broken"
    bad = [f"{p.relative_to(REPO)}:{line} imports {mod}" for p in files for line, mod in imports_of(p)
           if _hits(mod, FORBIDDEN[package])]
    assert not bad, bad


def test_the_scan_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from fewray.platform.checkpoint import load_weights\n    import ray.train\n")
    assert [m for _, m in imports_of(f)] == ["fewray.platform.checkpoint", "ray.train"]


def test_algorithms_do_not_import_ray_or_mlflow_at_run_time():
    code = ("import sys, fewray.algorithms; "
            "bad = [m for m in ('ray', 'mlflow', 'fewray.platform') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_data_does_not_import_ray_or_mlflow_at_run_time():
    code = ("import sys, fewray.data.catalog, fewray.data.builders, fewray.data.sources, fewray.data.images; "
            "bad = [m for m in ('ray', 'mlflow', 'fewray.platform') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_no_top_level_platform_package():
    assert not (REPO / "platform").exists()
    import platform

    assert hasattr(platform, "python_version")  # the standard module, not ours
