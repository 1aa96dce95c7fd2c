"""The README's MLflow UI links, in a real browser: a real ``mlflow server`` on 127.0.0.1, a run with a metric
history, and headless Chromium on the README's run-charts URL (the DOM it rendered and a screenshot).

MLflow 3.17 opens experiments in its GenAI view; the README's URL must land on the run's training curves.
Skipped only where Chromium is missing outside CI (``.ci/run`` installs the Debian package ``chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, MlflowServer

README_HOST = "http://127.0.0.1:5000"


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI must have it: .ci/run installs the Debian package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def readme_run_charts_url() -> str:
    """The URL template the README's MLflow UI section gives for a run's metric charts."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Tracking (MLflow) and the MLflow UI"):]
    section = section[:section.index("\n## ")]
    urls = re.findall(r"http://127\.0\.0\.1:5000/#/experiments/E/runs/R/model-metrics[^\s`|)]*", section)
    assert urls, "the README's MLflow UI section gives no run-charts URL"
    return urls[0]


def _browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --virtual-time-budget: the page's timers and fetches run until the charts are drawn (virtual ms)
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--window-size=1400,1000", "--virtual-time-budget=30000", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_readme_url_opens_the_runs_training_curves(tmp_path):
    exe = _chromium()
    template = readme_run_charts_url()
    assert "workflowType=machine_learning" in template  # the training view, not the GenAI one

    server = MlflowServer(tmp_path)
    server.start()
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("ui_check")
        run = client.create_run(experiment_id, run_name="ui-check-metatrain", tags={"fewray.kind": "metatrain"})
        run_id = run.info.run_id
        steps = range(0, 500, 50)  # 10 points per curve
        history = [Metric("loss", 2.0 / (1 + s / 50), 0, s) for s in steps]
        history += [Metric("val_accuracy_mean", 60 + 35 * s / 450, 0, s) for s in steps]
        client.log_batch(run_id, metrics=history)
        client.set_terminated(run_id)

        url = template.replace(README_HOST, server.uri).replace("/E/", f"/{experiment_id}/").replace("/R/", f"/{run_id}/")
        profile = tmp_path / "chromium-profile"
        # A first load fills the browser's cache: under headless Chromium's virtual time the UI's lazily loaded
        # chart code does not arrive within the first page load (the cards stay spinners); a user's browser,
        # in real time, draws them on the first visit.
        _browser(exe, profile, "--dump-dom", url)
        dom = _browser(exe, profile, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert "ui-check-metatrain" in html  # the run's page
        for name in ("loss", "val_accuracy_mean"):  # a chart card per metric, titled by its name
            assert f'title="{name}"' in html, f"no chart for {name} in the page at {url}"
        # the curves are drawn: plotly line paths with one segment per logged step
        lines = re.findall(r'class="js-line"[^>]* d="(M[^"]+)"', html)
        assert lines and max(p.count("L") for p in lines) >= len(steps) - 1, lines
        stroke = re.search(r'class="js-line"[^>]*stroke: rgb\((\d+), (\d+), (\d+)\)', html)
        assert stroke, "no stroke colour on the curves"
        assert "Evaluation runs" not in html  # the training view's side bar, not the GenAI view's

        png = tmp_path / "run_charts.png"
        shot = _browser(exe, profile, "--run-all-compositor-stages-before-draw",
                        f"--screenshot={png}", url)
        assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
        from PIL import Image

        with Image.open(png) as im:
            assert im.size == (1400, 1000)
            # the first row of chart cards (below the run's header and tabs at this window size): the curves'
            # colour there, where a page still loading its charts shows only spinners (0 such pixels)
            cards = dict((c, n) for n, c in im.convert("RGB").crop((200, 260, 1000, 620)).getcolors(1 << 20))
        line_pixels = cards.get(tuple(int(v) for v in stroke.groups()), 0)
        assert line_pixels >= 100, f"the screenshot {png} shows no curves ({line_pixels} pixels of their colour)"
    finally:
        server.stop()
