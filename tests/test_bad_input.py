"""Bad input, one test per row of docs/bad_input.md not already in test_cli_errors.py / test_config.py.

Each: a one-line ``error: ...`` naming the problem, exit code 2 (143 for SIGTERM), no traceback, and
nothing overwritten (an existing ``--output`` file, catalog or output directory is left as it was).
"""

import shutil
import time
import zipfile

import pyarrow.parquet as pq
import pytest

from conftest import CONFIG, OMNIGLOT_RELEASE, REPO, run_pipeline
from test_cli_errors import assert_user_error

from fewray.platform.data.catalog import write_split
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
    assert_user_error(proc, "does not fit model ProtoNet")
    assert existing_output.read_text() == '{"earlier": true}\n'


# ---- tracking -----------------------------------------------------------------------------------------

def test_unreachable_tracking_uri_fails_fast(trained, omniglot_catalog, existing_output):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = metatest(trained["best_checkpoint"], omniglot_catalog, existing_output, "--tracking-uri", uri)
    assert_user_error(proc, f"MLflow tracking server {uri} is unreachable")
    assert time.monotonic() - t0 < 60  # a clear error, never a hang
    assert existing_output.read_text() == '{"earlier": true}\n'
