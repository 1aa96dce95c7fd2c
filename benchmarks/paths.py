"""Committed result files hold paths relative to the repository, never the absolute paths of the machine that
made them (``/work/main/runs/...``, ``sqlite:////work/main/mlflow.db``).

Every benchmark passes what it writes through :func:`repo_relative`. Run as a script it rewrites existing
result files in place::

    python benchmarks/paths.py benchmarks/results

Example::

    >>> repo_relative({"ckpt": f"{ROOT}/runs/x/checkpoint.pt", "uri": f"sqlite:///{ROOT}/mlflow.db", "n": 3})
    {'ckpt': 'runs/x/checkpoint.pt', 'uri': 'sqlite:///mlflow.db', 'n': 3}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def repo_relative(obj: Any, root: Path = ROOT) -> Any:
    """``obj`` (nested dicts, lists, strings) with every occurrence of ``root/`` removed from its strings."""
    prefix = f"{root}/"
    if isinstance(obj, str):
        return obj.replace(prefix, "")
    if isinstance(obj, dict):
        return {k: repo_relative(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [repo_relative(v, root) for v in obj]
    return obj


def rewrite(directory: Path, root: Path = ROOT) -> list[Path]:
    """Rewrite the ``*.json`` and ``*.md`` files under ``directory`` with :func:`repo_relative`; returns the changed ones."""
    changed = []
    for path in sorted([*directory.rglob("*.json"), *directory.rglob("*.md")]):
        text = path.read_text()
        new = json.dumps(repo_relative(json.loads(text), root), indent=2) + "\n" if path.suffix == ".json" \
            else text.replace(f"{root}/", "")
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for p in rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "benchmarks" / "results")):
        print(p.relative_to(ROOT))
