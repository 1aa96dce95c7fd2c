"""Security: checkpoints cannot run code, no shell strings, servers fewray starts bind 127.0.0.1."""

import re
from pathlib import Path

import pytest
import torch

from conftest import REPO
from fewray.platform.checkpoint import load_checkpoint
from fewray.platform.errors import CheckpointError

SOURCES = [p for d in ("fewray", "pipelines", "benchmarks", "cluster") for p in (REPO / d).rglob("*")
           if p.suffix in {".py", ".sh"} and not any(part.startswith((".venv", "__pycache__")) for part in p.parts)]


class _Payload:
    """Unpickling this would create a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_code_in_it_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "evil": _Payload(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="holds Python objects .* so it was not loaded"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    calls = [(p, line) for p in SOURCES for line in p.read_text().splitlines() if re.search(r"torch\.load\(", line)]
    assert calls, "no torch.load found: the scan is broken"
    assert all("weights_only=True" in line for _, line in calls), [c for c in calls if "weights_only=True" not in c[1]]


def test_no_shell_true():
    assert not [p for p in SOURCES if re.search(r"shell\s*=\s*True", p.read_text())]


def test_servers_fewray_starts_bind_loopback():
    start = (REPO / "cluster" / "local" / "start.sh").read_text()
    assert "--dashboard-host=127.0.0.1" in start and "--node-ip-address=127.0.0.1" in start
    assert re.search(r"mlflow\" server .*--host 127\.0\.0\.1", start.replace("\\\n", " "))
    makefile = (REPO / "Makefile").read_text()
    ui = [line for line in makefile.splitlines() if "mlflow ui" in line or "mlflow server" in line]
    assert ui and all("127.0.0.1" in line for line in ui), ui
