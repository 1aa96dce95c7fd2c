"""Bad input, one test per row of docs/bad_input.md not already in test_cli_errors.py / test_config.py.

Each: a one-line ``error: ...`` naming the problem, exit code 2 (143 for SIGTERM), no traceback, and
nothing overwritten (an existing ``--output`` file, catalog or output directory is left as it was).
"""

import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import CONFIG, OMNIGLOT_RELEASE, PYTHON, REPO, TINY, run_pipeline, session_ray_address
from test_cli_errors import assert_user_error

from fewray.data.catalog import write_split
from fewray.platform.runtime import free_port


@pytest.fixture
def existing_output(tmp_path):
    """A result file from an earlier run that a failing run must not touch."""
    out = tmp_path / "result.json"
    out.write_text('{"earlier": true}\n')
    return out


def metatest(checkpoint, catalog, output, *args):
    return run_pipeline("metatest.py", "--config", str(CONFIG), "--checkpoint", str(checkpoint),
                        "--set", f"data.root={catalog}", "--num-tasks", "20", "--output", str(output), *args)


# ---- config -------------------------------------------------------------------------------------------

def test_config_file_missing(tmp_path, existing_output):
    proc = run_pipeline("metatest.py", "--config", str(tmp_path / "nope.yaml"), "--checkpoint", "x.pt",
                        "--output", str(existing_output))
    assert_user_error(proc, f"config file not found: {tmp_path / 'nope.yaml'}")
    assert existing_output.read_text() == '{"earlier": true}\n'


def test_config_yaml_syntax_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  ways: [1, 2\n")
    proc = run_pipeline("metatrain.py", "--config", str(bad), "--output-dir", str(tmp_path / "out"))
    assert_user_error(proc, "invalid YAML")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, key", [("--ways", "1", "test.ways"), ("--shots", "0", "test.shots")])
def test_config_value_out_of_range(trained, omniglot_catalog, existing_output, flag, value, key):
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, existing_output, flag, value)
    assert_user_error(proc, f"config key '{key}'")
    assert existing_output.read_text() == '{"earlier": true}\n'


def test_bad_config_leaves_a_finished_training_untouched(trained):
    out = trained["work"] / "out"
    before = (out / "train_result.json").read_text()
    proc = run_pipeline("metatrain.py", "--config", str(CONFIG), "--set", "train.ways=1", "--output-dir", str(out))
    assert_user_error(proc, "config key 'train.ways'")
    assert (out / "train_result.json").read_text() == before


@pytest.mark.parametrize("config, setting, message", [
    ("meta_baseline/conv4_omniglot.yaml", "model.pretrained_backbone={tmp}/nope/train_result.json",
     "model.pretrained_backbone: checkpoint not found: {tmp}/nope/train_result.json"),
    ("baseline/conv4_omniglot.yaml", "model.head.num_classes=5", "model.head.num_classes is 5 but the train split"),
])
def test_bad_model_start_for_two_stage_and_batch_trained_models(omniglot_catalog, tmp_path, config, setting, message):
    cfg = REPO / "configs" / "classification" / config
    proc = run_pipeline("metatrain.py", "--config", str(cfg), "--set", f"data.root={omniglot_catalog}",
                        "--set", setting.format(tmp=tmp_path), "--output-dir", str(tmp_path / "out"))
    assert_user_error(proc, message.format(tmp=tmp_path))
    assert not (tmp_path / "out").exists()


# ---- data ---------------------------------------------------------------------------------------------

def _release_copy(tmp_path, edit):
    """The real Omniglot release with ``images_background.zip`` rewritten by ``edit(name, data) -> data | None``."""
    src = tmp_path / "release"
    src.mkdir()
    shutil.copy(OMNIGLOT_RELEASE / "images_evaluation.zip", src)
    with zipfile.ZipFile(OMNIGLOT_RELEASE / "images_background.zip") as zin, \
            zipfile.ZipFile(src / "images_background.zip", "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info, data)
        extra = edit("<extra>", b"")
        if extra:
            zout.writestr(extra.decode(), b"")
    return src


def _existing_catalog(tmp_path):
    out = tmp_path / "catalog"
    out.mkdir()
    (out / "catalog.json").write_text('{"dataset": "earlier"}\n')
    return out


def test_corrupt_image_in_the_source_release(tmp_path):
    first = "images_background/Alphabet_of_the_Magi/character01/0709_01.png"
    src = _release_copy(tmp_path, lambda name, data: b"\x89PNG broken" if name == first else (None if name == "<extra>" else data))
    out = _existing_catalog(tmp_path)
    proc = run_pipeline("prepare_data.py", "omniglot", "--source", str(src), "--out", str(out))
    assert_user_error(proc, f"cannot read image {first}")
    assert sorted(p.name for p in out.iterdir()) == ["catalog.json"]
    assert (out / "catalog.json").read_text() == '{"dataset": "earlier"}\n'
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # no half-written catalog left


def test_empty_class_in_the_source_release(tmp_path):
    empty = "images_background/Alphabet_of_the_Magi/character99/"
    src = _release_copy(tmp_path, lambda name, data: empty.encode() if name == "<extra>" else data)
    out = _existing_catalog(tmp_path)
    proc = run_pipeline("prepare_data.py", "omniglot", "--source", str(src), "--out", str(out))
    assert_user_error(proc, "empty class in the Omniglot release: Alphabet_of_the_Magi/character99 has no PNG images")
    assert (out / "catalog.json").read_text() == '{"dataset": "earlier"}\n'


@pytest.mark.slow  # 14 s: the not-slow run stays under 3 minutes
def test_corrupt_image_in_the_catalog(trained, omniglot_catalog, tmp_path, existing_output):
    table = pq.read_table(omniglot_catalog / "test.parquet", columns=["image", "label", "class_name"])
    cols = {k: table.column(k).to_pylist()[:800] for k in ("image", "label", "class_name")}  # 40 classes
    cols["image"][123] = b"this is not an image"
    write_split(tmp_path / "cat", "test", cols)
    proc = metatest(trained["best_checkpoint"], tmp_path / "cat", existing_output)
    assert_user_error(proc, f"cannot decode an image of split 'test' in {tmp_path / 'cat'}: row 123 is not a readable image")
    assert existing_output.read_text() == '{"earlier": true}\n'


# ---- checkpoints --------------------------------------------------------------------------------------

def test_truncated_checkpoint(trained, omniglot_catalog, tmp_path, existing_output):
    src = (trained["work"] / "out").glob("metatrain/checkpoint_*/checkpoint.pt").__next__().read_bytes()
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(src[: len(src) // 2])
    proc = metatest(bad, omniglot_catalog, existing_output)
    assert_user_error(proc, f"cannot read checkpoint {bad}")
    assert existing_output.read_text() == '{"earlier": true}\n'


def test_checkpoint_of_another_architecture(trained, omniglot_catalog, existing_output):
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, existing_output,
                    "--set", "model.backbone.channels=[32,32,32,32]")
    assert_user_error(proc, "does not fit model ProtoNet: 'backbone.layers.0.0.weight' has shape (64, 1, 3, 3) in "
                            "the checkpoint, (32, 1, 3, 3) in the model")
    assert existing_output.read_text() == '{"earlier": true}\n'


# ---- tracking -----------------------------------------------------------------------------------------

def test_unreachable_tracking_uri_fails_fast(trained, omniglot_catalog, existing_output):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, existing_output, "--tracking-uri", uri)
    assert_user_error(proc, f"MLflow tracking server {uri} is unreachable")
    assert time.monotonic() - t0 < 60  # a clear error, never a hang
    assert existing_output.read_text() == '{"earlier": true}\n'


# ---- issue 13: checked before any work --------------------------------------------------------------

def _copy_run(trained, tmp_path) -> Path:
    out = tmp_path / "copied_run"
    shutil.copytree(trained["work"] / "out", out)
    return out


def test_output_dir_of_another_model_is_refused(trained, omniglot_catalog, tmp_path):
    out = _copy_run(trained, tmp_path)
    before = (out / "train_result.json").read_text()
    cfg = REPO / "configs" / "classification" / "matching_net" / "conv4_omniglot.yaml"
    proc = run_pipeline("metatrain.py", "--config", str(cfg), "--set", f"data.root={omniglot_catalog}",
                        "--output-dir", str(out))
    assert_user_error(proc, f"--output-dir {out} holds a checkpoint of another model or data: model.type is "
                            f"'ProtoNet' there, 'MatchingNet' here")
    assert (out / "train_result.json").read_text() == before


def test_checkpoint_of_another_classifier_type_is_refused(trained, omniglot_catalog, existing_output):
    cfg = REPO / "configs" / "classification" / "matching_net" / "conv4_omniglot.yaml"
    proc = run_pipeline("metatest.py", "--config", str(cfg), "--checkpoint", trained["best_checkpoint"],
                        "--set", f"data.root={omniglot_catalog}", "--output", str(existing_output))
    assert_user_error(proc, "was trained as model.type 'ProtoNet'; the config says 'MatchingNet'")
    assert existing_output.read_text() == '{"earlier": true}\n'


@pytest.mark.slow
def test_resume_from_a_copied_dir_with_another_tracking_store(trained, omniglot_catalog, tmp_path):
    """A finished run copied elsewhere and re-run from a directory with its own ./mlflow.db: a new MLflow run
    that names the old one, not a 'Run not found' traceback."""
    out = _copy_run(trained, tmp_path)
    old_run = (out / "mlflow_run_id").read_text().strip()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    args = ["--config", str(CONFIG), *sum((["--set", kv] for kv in [*TINY, f"data.root={omniglot_catalog}"]), []),
            "--output-dir", str(out)]
    proc = subprocess.run([PYTHON, str(REPO / "pipelines" / "metatrain.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env={**os.environ, "RAY_ADDRESS": session_ray_address()})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"MLflow run {old_run} of {out} is not in the tracking store" in proc.stderr
    result = json.loads((out / "train_result.json").read_text())
    assert result["mlflow_run_id"] != old_run and result["tracking_uri"] == f"sqlite:///{cwd / 'mlflow.db'}"
    assert result["train_seconds"] >= trained["train_seconds"] > 0  # the re-run keeps the training time it took
    from mlflow.tracking import MlflowClient

    run = MlflowClient(result["tracking_uri"]).get_run(result["mlflow_run_id"])
    assert run.data.tags["fewray.resumed_from_run_id"] == old_run


@pytest.mark.parametrize("setting, message", [
    ("train.cpus_per_worker=64", "training asks for 1 worker x 64 CPUs = 64 CPUs but the cluster has 2 CPUs on 1 node"),
    ("train.num_workers=3", "training asks for 3 workers x 1 CPUs = 3 CPUs but the cluster has 2 CPUs"),
    ("train.use_gpu=true", "training asks for 1 worker x 1 CPUs and 1 GPUs = 1 CPUs and 1 GPUs but the cluster has 2 CPUs"),
])
@pytest.mark.slow  # a metatrain.py subprocess each: 10 s
def test_resources_the_cluster_cannot_supply_fail_before_work(omniglot_catalog, tmp_path, setting, message):
    t0 = time.monotonic()
    proc = run_pipeline("metatrain.py", "--config", str(CONFIG), "--set", f"data.root={omniglot_catalog}",
                        "--set", setting, "--set", "train.resource_wait_s=1", "--output-dir", str(tmp_path / "out"))
    assert_user_error(proc, message)
    assert "after waiting 1 s" in proc.stderr
    assert time.monotonic() - t0 < 60  # never the endless retry loop
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("checkpoint_*"))


def test_sweep_trial_resources_the_cluster_cannot_supply(omniglot_catalog, tmp_path):
    cfg = REPO / "configs" / "classification" / "protonet_conv4_omniglot_tune.yaml"
    proc = run_pipeline("tune.py", "--config", str(cfg), "--set", f"data.root={omniglot_catalog}",
                        "--set", "tune.resources_per_trial.cpus_per_worker=64", "--output-dir", str(tmp_path / "s"))
    assert_user_error(proc, "each sweep trial asks for 1 worker x 64 CPUs")


@pytest.mark.parametrize("where", ["dir", "under_file"])
def test_output_path_is_checked_before_the_meta_test(trained, omniglot_catalog, tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    target = {"dir": tmp_path, "under_file": tmp_path / "file.txt" / "r.json"}[where]
    message = {"dir": f"--output {tmp_path} is a directory", "under_file": f"{tmp_path / 'file.txt'} is a file"}[where]
    t0 = time.monotonic()
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, target)
    assert_user_error(proc, message)
    assert time.monotonic() - t0 < 30  # before Ray, not after the meta-test


@pytest.mark.slow
def test_result_line_is_printed_before_the_output_file_is_written(trained, omniglot_catalog, tmp_path):
    out = tmp_path / "deep" / "result.json"
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("5-way 1-shot: accuracy ") and json.loads(out.read_text())["line"] == lines[0]


@pytest.mark.parametrize("setting, message", [
    ("data.channels=3", "data.channels=3 does not fit the model: model.backbone.in_channels is 1"),
    ("data.image_size=84", "data.image_size=84 but the catalog {root} holds 28x28 images"),
])
@pytest.mark.slow
def test_model_and_data_that_do_not_fit(trained, omniglot_catalog, tmp_path, setting, message):
    for script, extra in (("metatest.py", ["--checkpoint", trained["best_checkpoint"]]),
                          ("metatrain.py", ["--output-dir", str(tmp_path / "out")])):
        t0 = time.monotonic()
        proc = run_pipeline(script, "--config", str(CONFIG), *extra, "--set", f"data.root={omniglot_catalog}",
                            "--set", setting)
        assert_user_error(proc, message.format(root=omniglot_catalog))
        assert time.monotonic() - t0 < 30  # at config/data load, not inside Ray a minute later


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "config key 'test.seed': Input should be greater than or equal to 0"),
    (["--num-tasks", "100000000"], "config key 'test.num_tasks': Input should be less than or equal to 1000000"),
    (["--set", "tracking.experiment="], "config key 'tracking.experiment'"),
    (["--tracking-uri", "bogus://x"], "MLflow tracking URI 'bogus://x' cannot be used"),
])
def test_more_one_line_errors(trained, omniglot_catalog, existing_output, args, message):
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, existing_output, *args)
    assert_user_error(proc, message)
    assert existing_output.read_text() == '{"earlier": true}\n'


@pytest.mark.parametrize("args, message", [
    (["--num-workers", "-3"], "argument --num-workers: expected a positive integer, got -3"),
    (["--shots", "1,,5"], "argument --shots: expected an integer or integers like 1,5,10, got '1,,5'"),
])
def test_silent_oddities_are_usage_errors(trained, omniglot_catalog, existing_output, args, message):
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, existing_output, *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert existing_output.read_text() == '{"earlier": true}\n'


def test_config_that_is_binary_or_a_directory(tmp_path):
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    for path, message in ((binary, f"config file {binary} is not a text (UTF-8) YAML file"),
                          (tmp_path, f"config path {tmp_path} is a directory, not a YAML file")):
        proc = run_pipeline("metatrain.py", "--config", str(path), "--output-dir", str(tmp_path / "out"))
        assert_user_error(proc, message)
    assert not (tmp_path / "out").exists()


def test_dotted_search_space_key_through_set(omniglot_catalog, tmp_path):
    cfg = REPO / "configs" / "classification" / "protonet_conv4_omniglot_tune.yaml"
    proc = run_pipeline("tune.py", "--config", str(cfg), "--set", f"data.root={omniglot_catalog}", "--dry-run",
                        "--set", "tune.search_space.train.optimizer.lr={loguniform: [0.0001, 0.01]}",
                        "--output-dir", str(tmp_path / "s"))
    assert proc.returncode == 0 and proc.stdout.startswith("ok: "), proc.stderr[-2000:]
    proc = run_pipeline("tune.py", "--config", str(cfg), "--set", f"data.root={omniglot_catalog}", "--dry-run",
                        "--set", "tune.search_space={train: {optimizer.lr: {loguniform: [0.0001, 0.01]}}}")
    assert_user_error(proc, "tune.search_space.train: search-space keys are whole dotted config keys like "
                            "'train.optimizer.lr'")


@pytest.mark.slow
def test_zero_byte_and_code_holding_checkpoints(omniglot_catalog, tmp_path, existing_output):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    proc = metatest(empty, omniglot_catalog, existing_output)
    assert_user_error(proc, f"cannot read checkpoint {empty}: the file is empty (0 bytes)")
    import fractions

    import torch

    code = tmp_path / "objects.pt"
    torch.save({"model": {}, "x": fractions.Fraction(1, 2)}, code)
    proc = metatest(code, omniglot_catalog, existing_output)
    assert_user_error(proc, f"checkpoint {code} holds Python objects (fractions.Fraction), not only tensors: "
                            f"loading it could run code, so it was not loaded")


@pytest.mark.slow
def test_sweep_whose_every_trial_fails_is_one_line(omniglot_catalog, tmp_path):
    """A catalog whose val split holds a corrupt image: every trial fails at its first meta-validation."""
    cat = tmp_path / "cat"
    for split, rows in (("train", 400), ("val", 400)):
        table = pq.read_table(omniglot_catalog / f"{split}.parquet", columns=["image", "label", "class_name"])
        cols = {k: table.column(k).to_pylist()[:rows] for k in ("image", "label", "class_name")}  # 20 classes
        if split == "val":
            cols["image"][7] = b"not an image"
        write_split(cat, split, cols)
    (cat / "catalog.json").write_text(json.dumps({"dataset": "omniglot", "image_size": 28, "channels": 1}))
    cfg = REPO / "configs" / "classification" / "protonet_conv4_omniglot_tune.yaml"
    proc = run_pipeline("tune.py", "--config", str(cfg), "--set", f"data.root={cat}", "--set", "tune.num_samples=2",
                        "--set", "tune.scheduler.type=fifo", "--set", "train.num_steps=4", "--set", "train.val_interval=2",
                        "--set", "train.ways=5", "--set", "val.ways=5", "--set", "val.num_tasks=5",
                        "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--output-dir", str(tmp_path / "sweep"))
    assert_user_error(proc, "every trial of the sweep failed (2 of 2); the first")
    last = proc.stderr.strip().splitlines()[-1]
    assert "row 7 is not a readable image" in last and f"Tune's logs: {tmp_path / 'sweep' / 'tune'}" in last


# ---- Ctrl-C ---------------------------------------------------------------------------------------------

def _interrupt_after(args: list[str], ready, cwd: Path, timeout: float = 240) -> tuple[int, str, float]:
    """Start ``args``, wait until ``ready(stderr_so_far)``, send SIGINT: ``(exit code, stderr, seconds to exit)``."""
    log = cwd / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd,
                                env={**os.environ, "RAY_ADDRESS": session_ray_address(), "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + timeout
            while not ready(log.read_text()) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
            assert proc.poll() is None, log.read_text()[-3000:]
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            code = proc.wait(60)
            return code, log.read_text(), time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.slow
def test_ctrl_c_stops_training_at_once_and_the_run_resumes(omniglot_catalog, tmp_path):
    out = tmp_path / "out"
    args = [PYTHON, str(REPO / "pipelines" / "metatrain.py"), "--config", str(CONFIG), "--output-dir", str(out),
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    for kv in [*TINY, f"data.root={omniglot_catalog}", "train.num_steps=2000", "train.val_interval=10"]:
        args += ["--set", kv]
    code, err, seconds = _interrupt_after(args, lambda _: list(out.glob("metatrain/checkpoint_*/checkpoint.pt")),
                                          tmp_path)
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "error: interrupted (re-run the same command to resume)"
    assert "Traceback" not in err
    assert seconds < 15, seconds
    again = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert again.returncode == 0 and "resumes from step " in again.stdout, again.stderr[-2000:]
    assert "resumes from step 0" not in again.stdout


@pytest.mark.slow
def test_ctrl_c_stops_a_meta_test_at_once(trained, omniglot_catalog, tmp_path):
    args = [PYTHON, str(REPO / "pipelines" / "metatest.py"), "--config", str(CONFIG), "--checkpoint",
            str(trained["best_checkpoint"]), "--set", f"data.root={omniglot_catalog}", "--num-tasks", "1000000",
            "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    started = time.monotonic()
    code, err, seconds = _interrupt_after(args, lambda _: time.monotonic() - started > 25, tmp_path)
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted") and "Traceback" not in err
    assert seconds < 15, seconds
