"""Seams from DESIGN.md: the models never import Ray or MLflow; no top-level `platform` package."""

import subprocess
import sys

from conftest import REPO


def test_algorithms_do_not_import_ray_or_mlflow():
    code = ("import sys, fewray.algorithms; "
            "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_no_top_level_platform_package():
    assert not (REPO / "platform").exists()
    import platform

    assert hasattr(platform, "python_version")  # the standard module, not ours
