"""Bad input: a one-line error naming the problem, a non-zero exit code, no traceback."""

import pytest

from conftest import CONFIG, run_pipeline


def assert_user_error(proc, needle: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and needle in last, err[-2000:]


def test_missing_release_directory(tmp_path):
    proc = run_pipeline("prepare_data.py", "omniglot", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert_user_error(proc, "Omniglot source directory not found")
    assert not (tmp_path / "o").exists()


def test_missing_data_directory(trained, tmp_path):
    proc = run_pipeline("metatest.py", "--config", str(CONFIG), "--checkpoint", trained["best_checkpoint"],
                        "--set", f"data.root={tmp_path / 'no_catalog'}")
    assert_user_error(proc, "data directory not found")


def test_missing_data_directory_for_training(tmp_path):
    proc = run_pipeline("metatrain.py", "--config", str(CONFIG), "--set", f"data.root={tmp_path / 'no_catalog'}",
                        "--output-dir", str(tmp_path / "out"))
    assert_user_error(proc, "data directory not found")


@pytest.mark.parametrize(
    "override, needle",
    [("train.learning_rate=0.1", "unknown config key 'train.learning_rate'"),
     ("train.num_steps=lots", "config key 'train.num_steps'")],
)
def test_bad_config(override, needle, tmp_path):
    proc = run_pipeline("metatrain.py", "--config", str(CONFIG), "--set", override, "--output-dir", str(tmp_path))
    assert_user_error(proc, needle)


def test_ways_greater_than_classes(trained, omniglot_catalog):
    proc = run_pipeline("metatest.py", "--config", str(CONFIG), "--checkpoint", trained["best_checkpoint"],
                        "--set", f"data.root={omniglot_catalog}", "--ways", "2000")
    assert_user_error(proc, "ways=2000 is greater than the 1692 classes of split 'test'")


def test_shots_plus_queries_greater_than_images(trained, omniglot_catalog):
    proc = run_pipeline("metatest.py", "--config", str(CONFIG), "--checkpoint", trained["best_checkpoint"],
                        "--set", f"data.root={omniglot_catalog}", "--shots", "10", "--queries", "15")
    assert_user_error(proc, "shots + queries = 10 + 15 = 25 is greater than the 20 images")


def test_checkpoint_that_does_not_exist(omniglot_catalog, tmp_path):
    proc = run_pipeline("metatest.py", "--config", str(CONFIG), "--checkpoint", str(tmp_path / "missing.pt"),
                        "--set", f"data.root={omniglot_catalog}")
    assert_user_error(proc, f"checkpoint not found: {tmp_path / 'missing.pt'}")
