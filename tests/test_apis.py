"""Inference APIs (init_classifier, process_support_images, inference_classifier, show_result_pyplot).

Real data and a real model: the ``trained`` fixture's ProtoNet (meta-trained for a few steps with Ray Train
on the Omniglot catalog) classifies real Omniglot test-split characters it never saw in training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CONFIG
from PIL import Image

from fewray.apis import (
    inference_classifier,
    init_classifier,
    load_image,
    process_support_images,
    show_result_pyplot,
)
from fewray.data.catalog import load_split
from fewray.platform.errors import CheckpointError, ConfigError, DataError
from fewray.platform.features import to_float

WAYS, QUERIES = 5, 3


@pytest.fixture(scope="module")
def task(omniglot_catalog):
    """A fixed 5-way 1-shot task of the Omniglot test split: 5 classes drawn with seed 0, image 0 of each as
    support, images 1..3 as queries. Images are ``(28, 28)`` uint8 arrays."""
    data = load_split(str(omniglot_catalog), "test", channels=1)
    classes = np.random.default_rng(0).choice(data.num_classes, WAYS, replace=False)
    idx = {c: np.flatnonzero(data.labels == c) for c in classes}
    return {
        "names": [data.class_names[c] for c in classes],
        "support": [data.images[idx[c][0], 0] for c in classes],
        "queries": [data.images[idx[c][1 + q], 0] for c in classes for q in range(QUERIES)],
        "query_labels": [i for i in range(WAYS) for _ in range(QUERIES)],
    }


@pytest.fixture(scope="module")
def model(trained):
    return init_classifier(CONFIG, trained["best_checkpoint"])


def test_init_classifier(trained, model):
    assert not model.training and model.cfg.data.image_size == 28 and model.cfg.data.channels == 1
    state = torch.load(trained["best_checkpoint"], weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["model"][k]), k
    # the config stored in the checkpoint, and a train_result.json, work as well
    from_ckpt = init_classifier(None, trained["best_checkpoint"])
    assert from_ckpt.cfg.train.num_steps == 30
    json_result = trained["work"] / "out" / "train_result.json"
    if json_result.is_file():
        init_classifier(CONFIG, json_result)
    # a checkpoint of another classifier type under a config that would load its weights silently
    matching = CONFIG.parent / "matching_net" / "conv4_omniglot.yaml"
    with pytest.raises(CheckpointError, match="was trained as model.type 'ProtoNet'; the config says 'MatchingNet'"):
        init_classifier(matching, trained["best_checkpoint"])


def test_init_classifier_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        init_classifier(CONFIG, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="config file not found"):
        init_classifier(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="needs a config"):
        init_classifier(None)


def test_support_and_query_match_the_model(model, task, tmp_path):
    """The API's scores are the model's own meta-test scores on the catalog images (paths or arrays)."""
    paths = []
    for i, img in enumerate(task["support"]):  # support as PNG files, queries as arrays
        paths.append(tmp_path / f"support_{i}.png")
        Image.fromarray(img).save(paths[-1])
    classes = process_support_images(model, paths, task["names"])
    assert classes == task["names"]
    results = inference_classifier(model, task["queries"])
    with torch.no_grad():
        model.before_forward_support()
        model(mode="support", img=to_float(np.stack(task["support"])[:, None]), label=torch.arange(WAYS))
        model.before_forward_query()
        expected = torch.softmax(model(mode="query", img=to_float(np.stack(task["queries"])[:, None])), -1)
    got = torch.tensor([[r["scores"][n] for n in task["names"]] for r in results])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for r, p in zip(results, expected):
        assert r["pred_label"] == int(p.argmax()) and r["pred_class"] == task["names"][r["pred_label"]]
        assert r["pred_score"] == pytest.approx(float(p.max()), rel=1e-4)
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("shots, min_accuracy", [(1, 0.60), (5, 0.80)])
def test_classifies_unseen_characters(model, omniglot_catalog, shots, min_accuracy):
    """5-way K-shot on unseen test characters through the API: 20 fixed tasks (classes drawn with seeds 0..19,
    images 0..K-1 of each class as support, the next 3 as queries: 300 queries).

    The tiny fixture model (30 steps of 10-way training, about 66% meta-val accuracy) gets 218/300 (72.7%)
    1-shot and 266/300 (88.7%) 5-shot here, the same on every run; chance is 20%. The thresholds are about
    4.5 binomial standard deviations below that, so the test fails when support images, labels or the
    preprocessing go wrong (which drops the accuracy towards chance), not by luck. It tests the API, not
    the training: an untrained Conv4 gets about 55% / 77% on the same tasks.
    """
    data = load_split(str(omniglot_catalog), "test", channels=1)
    correct = total = 0
    for seed in range(20):
        classes = np.random.default_rng(seed).choice(data.num_classes, WAYS, replace=False)
        idx = {c: np.flatnonzero(data.labels == c) for c in classes}
        names = [data.class_names[c] for c in classes]
        process_support_images(model, [data.images[idx[c][s], 0] for c in classes for s in range(shots)],
                               [n for n in names for _ in range(shots)])
        queries = [data.images[idx[c][shots + q], 0] for c in classes for q in range(QUERIES)]
        results = inference_classifier(model, queries)
        correct += sum(r["pred_class"] == n for r, n in zip(results, [n for n in names for _ in range(QUERIES)]))
        total += len(queries)
    assert correct / total >= min_accuracy, f"{shots}-shot: {correct}/{total} queries right"


def test_query_equal_to_a_support_image(model, task):
    """A query identical to a support image (1-shot: its prototype, distance 0) is predicted as that class."""
    process_support_images(model, task["support"], task["names"])
    for i, img in enumerate(task["support"]):
        r = inference_classifier(model, img)
        assert r["pred_label"] == i and r["pred_class"] == task["names"][i]
        assert r["pred_score"] == max(r["scores"].values())


def test_int_labels_and_errors(model, task):
    labels = [7, 3, 7, 3]
    assert process_support_images(model, task["support"][:4], labels) == [7, 3]
    r = inference_classifier(model, task["support"][1])
    assert r["pred_class"] == 3 and r["pred_label"] == 1 and set(r["scores"]) == {7, 3}
    with pytest.raises(ValueError, match="2 images and 3 labels"):
        process_support_images(model, task["support"][:2], [0, 1, 2])
    with pytest.raises(DataError, match="image file not found: .*nope.png"):
        inference_classifier(model, "/nonexistent/nope.png")
    with pytest.raises(DataError, match="uint8"):
        inference_classifier(model, np.zeros((28, 28), np.float32))
    fresh = init_classifier(CONFIG)
    with pytest.raises(RuntimeError, match="process_support_images"):
        inference_classifier(fresh, task["support"][0])


def test_load_image_converts_and_resizes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert load_image(rgb, 28, channels=1).shape == (1, 28, 28)
    assert load_image(rgb[..., 0], 32, channels=3).shape == (3, 32, 32)
    path = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(path)
    out = load_image(str(path), 84, channels=3)
    assert out.shape == (3, 84, 84) and out.dtype == np.uint8
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"cannot read image {path}"):
        load_image(path, 84)


def test_show_result_pyplot(model, task, tmp_path):
    import matplotlib.image as mpimg

    process_support_images(model, task["support"], task["names"])
    r = inference_classifier(model, task["queries"][0])
    out = tmp_path / "plots" / "result.png"
    rgb = show_result_pyplot(task["queries"][0], r, out_file=out)
    assert rgb.shape == (400, 400, 3) and rgb.dtype == np.uint8
    png = mpimg.imread(out)
    assert png.shape[:2] == (400, 400)
    assert png[..., :3].std() > 0.05  # something drawn: the character and the title
    # larger figures, RGB images, no file
    color = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    assert show_result_pyplot(color, r, figsize=(6, 3), dpi=50).shape == (150, 300, 3)
