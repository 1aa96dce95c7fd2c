"""Image retrieval (issue 14, mmpretrain's ImageToImageRetriever): metrics against hand computation, the four
prototype forms, dump/reload, Ray fan-out invariance, the pipeline end to end and its bad input.

The real data is a tiny Caltech-101 catalog (4 classes x 6 images at 32x32) built once per module from
``../shared/data/caltech101`` with ``prepare_data.py folder``'s function; the encoder is a randomly initialised Conv4.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import random
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO, SHARED_DATA, run_pipeline

from fewray.algorithms import BACKBONES
from fewray.algorithms.builder import RETRIEVERS
from fewray.algorithms.retrievers import ImageToImageRetriever, rank_similarity
from fewray.core.errors import ConfigError, DataError
from fewray.evaluation.retrieval import RetrievalMetrics

CALTECH = SHARED_DATA / "caltech101" / "101_ObjectCategories"
CLASSES = ("accordion", "anchor", "ant", "barrel")
PER_CLASS = 6
SIZE = 32


@pytest.fixture(scope="module")
def tiny_caltech(tmp_path_factory):
    """A test-only catalog of 4 Caltech-101 classes, 6 images each, 32x32 RGB (``prepare_data.py folder``)."""
    from fewray.data.sources.folder import prepare_folder

    base = tmp_path_factory.mktemp("caltech")
    src = base / "src"
    for c in CLASSES:
        (src / c).mkdir(parents=True)
        for f in sorted((CALTECH / c).iterdir())[:PER_CLASS]:
            (src / c / f.name).symlink_to(f)
    prepare_folder(src, base / "catalog", SIZE, counts=(0, 0, len(CLASSES)), seed=0)
    return base / "catalog"


def conv4(seed: int = 0):
    torch.manual_seed(seed)
    return BACKBONES.build({"type": "Conv4", "in_channels": 3}).eval()


# ---- metrics ----------------------------------------------------------------------------------------------

def test_recall_and_map_at_r_match_hand_computation():
    g = [0, 0, 1, 1, 1, 2]
    sim = np.array([
        [0.1, 0.9, 0.8, 0.3, 0.25, 0.2],  # label 0: ranks 1 2 3 4 5 0 -> T F F F F T; R=2, AP=1/2
        [0.5, 0.5, 0.7, 0.1, 0.4, 0.9],   # label 1: ranks 5 2 0 1 4 3 (tie: 0 first) -> F T F F T T; R=3, AP=(1/2)/3
        [0.2, 0.1, 0.3, 0.4, 0.35, 0.05],  # label 2: ranks 3 4 2 0 1 5 -> F F F F F T; R=1, AP=0
        [0.3, 0.2, 0.9, 0.8, 0.1, 0.7],   # label 1: ranks 2 3 5 0 1 4 -> T T F ...; R=3, AP=(1+1)/3
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # label 7: no gallery item of its class: R=0, no hit, not in mAP@R
    ])
    ev = RetrievalMetrics(topk=(1, 2, 4))
    out = ev.compute(ev.process({"query_ids": range(5), "similarity": sim},
                                {"query_labels": [0, 1, 2, 1, 7], "gallery_labels": g}))
    assert out["Recall@1"] == pytest.approx(100 * 2 / 5)
    assert out["Recall@2"] == pytest.approx(100 * 3 / 5)
    assert out["Recall@4"] == pytest.approx(100 * 3 / 5)
    assert out["mAP@R"] == pytest.approx(100 * (1 / 2 + 1 / 6 + 0 + 2 / 3) / 4)
    assert out["num_queries"] == 5
    assert ev.metrics == ("Recall@1", "Recall@2", "Recall@4", "mAP@R", "num_queries")


def test_leave_one_out_leaves_the_query_out_of_its_ranking_and_of_r():
    labels = [0, 0, 1, 1, 1]
    sim = np.array([[1.0, 0.2, 0.9, 0.1, 0.3],
                    [0.2, 1.0, 0.3, 0.4, 0.8],
                    [0.9, 0.3, 1.0, 0.7, 0.6],
                    [0.1, 0.4, 0.7, 1.0, 0.5],
                    [0.3, 0.8, 0.6, 0.5, 1.0]])
    ev = RetrievalMetrics(topk=(1, 2, 4))
    targets = {"query_labels": labels, "gallery_labels": labels}
    loo = ev.compute(ev.process({"query_ids": range(5), "similarity": sim}, {**targets, "exclude": range(5)}))
    # by hand: rankings 2 4 1 3 | 4 3 2 0 | 0 3 4 1 | 2 4 1 0 | 1 2 3 0; R = 1, 1, 2, 2, 2
    assert loo["Recall@1"] == pytest.approx(20.0)
    assert loo["Recall@2"] == pytest.approx(60.0)
    assert loo["Recall@4"] == pytest.approx(100.0)
    assert loo["mAP@R"] == pytest.approx(100 * (0 + 0 + 0.25 + 1 + 0.25) / 5)
    naive = ev.compute(ev.process({"query_ids": range(5), "similarity": sim}, targets))
    assert naive["Recall@1"] == 100.0  # each image finds itself: why the protocol leaves it out


def test_metrics_are_identical_for_any_sharding_and_order():
    rng = np.random.default_rng(0)
    sim = rng.random((37, 50)).astype(np.float32)
    sim[:, 10] = sim[:, 11]  # ties
    q, g = rng.integers(0, 5, 37), rng.integers(0, 5, 50)
    ev = RetrievalMetrics()

    def shard(a, b):
        return ev.process({"query_ids": np.arange(a, b), "similarity": sim[a:b]},
                          {"query_labels": q[a:b], "gallery_labels": g})

    whole = ev.compute(ev.merge([shard(0, 37)]))
    for cuts in ([0, 1, 37], [0, 18, 19, 37], [0, 5, 10, 20, 30, 37]):
        parts = [shard(a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        random.Random(len(cuts)).shuffle(parts)
        assert ev.compute(ev.merge(parts)) == whole  # to the last bit


def test_rank_similarity_ties_exclusion_and_topk_larger_than_the_gallery():
    sim = torch.tensor([[0.5, 0.9, 0.9, 0.1], [0.3, 0.3, 0.3, 0.3]])
    scores, idx = rank_similarity(sim, 3)
    assert idx.tolist() == [[1, 2, 0], [0, 1, 2]] and scores[0].tolist() == pytest.approx([0.9, 0.9, 0.5])
    assert rank_similarity(sim, -1, exclude=torch.tensor([2, 0]))[1].tolist() == [[1, 0, 3], [1, 2, 3]]
    with pytest.raises(ConfigError, match=r"topk 5 is larger than the gallery \(4 items\)"):
        rank_similarity(sim, 5)
    with pytest.raises(ConfigError, match="3 per query when each query is left out"):
        rank_similarity(sim, 4, exclude=torch.tensor([0, 1]))


# ---- the retriever ----------------------------------------------------------------------------------------

def test_prototype_from_loader_config_path_and_tensor(tiny_caltech, tmp_path):
    import fewray.platform.retrieval  # noqa: F401 - registers the CatalogLoader of a config-dict prototype
    from fewray.data.catalog import load_split

    images = torch.from_numpy(load_split(str(tiny_caltech), "test", 3).images)
    enc = conv4()
    forms = {
        "list of batches": [images[:10], images[10:]],
        "DataLoader": DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=7),
        "dict batches": [{"img": images[:12]}, {"img": images[12:]}],
        "config dict": {"root": str(tiny_caltech), "split": "test", "batch_size": 5},
    }
    vecs = {}
    for name, proto in forms.items():
        r = ImageToImageRetriever(enc, prototype=proto)
        r.prepare_prototype()
        vecs[name] = r.prototype_vecs
        assert vecs[name].shape == (len(images), 256), name
    ref = vecs["list of batches"]
    for name, v in vecs.items():
        torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-6, msg=name)
    # a tensor, and the file dump_prototype wrote, give the same results, bit for bit
    loader_r = ImageToImageRetriever(enc, prototype=forms["list of batches"], topk=5)
    path = loader_r.dump_prototype(tmp_path / "sub" / "gallery.pt")
    queries = images[::5]
    want = loader_r.predict(queries)
    for proto in (str(path), path, ref.clone()):
        got = ImageToImageRetriever(enc, prototype=proto, topk=5).predict(queries)
        for key in ("score", "pred_label", "pred_score"):
            assert torch.equal(got[key], want[key]), (type(proto), key)
    assert torch.equal(torch.load(path, weights_only=True), ref)
    assert want["pred_label"][:, 0].tolist() == list(range(0, len(images), 5))  # each image finds itself first


def test_prototype_of_another_dimension_names_both(tmp_path):
    torch.save(torch.zeros(4, 7), tmp_path / "other.pt")
    r = ImageToImageRetriever(conv4(), prototype=str(tmp_path / "other.pt"))
    with pytest.raises(DataError, match=rf"prototype file {tmp_path / 'other.pt'} holds 7-d features but the image "
                                        rf"encoder gives 64-d features"):
        r.predict(torch.zeros(2, 3, 16, 16))


@pytest.mark.parametrize("content, message", [
    (None, "prototype file not found"),
    (b"", "the file is empty"),
    (b"not a torch file", "cannot read prototype file"),
    ("object", "holds Python objects (fractions.Fraction)"),
    ({"vecs": torch.zeros(2, 3)}, "holds a dict, not a (P, D) tensor"),
    (torch.zeros(3), "holds a tensor of shape (3,)"),
])
def test_bad_prototype_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "p.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        from fractions import Fraction

        torch.save({"x": Fraction(1, 2)}, path)  # unpickling it would construct an object
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DataError) as err:
        ImageToImageRetriever(conv4(), prototype=str(path)).prepare_prototype()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_forward_modes_registry_and_loss():
    images = torch.rand(4, 3, 16, 16)
    r = RETRIEVERS.build({"type": "ImageToImageRetriever", "image_encoder": {"type": "Conv4", "in_channels": 3},
                          "topk": 2}, "model", prototype=torch.randn(6, 64))
    assert r(images).shape == (4, 64)
    out = r(images, mode="predict")
    assert out["score"].shape == (4, 6) and out["pred_label"].shape == (4, 2) and out["pred_score"].shape == (4, 2)
    with pytest.raises(NotImplementedError, match="has no head"):
        r(images, torch.tensor([0, 1, 0, 1]), mode="loss")
    with pytest.raises(ConfigError, match="unknown similarity_fn 'euclid'"):
        ImageToImageRetriever(conv4(), similarity_fn="euclid")
    with pytest.raises(ConfigError, match="topk must be a positive integer or -1"):
        ImageToImageRetriever(conv4(), topk=0)
    trained = ImageToImageRetriever({"type": "Conv4", "in_channels": 3}, torch.randn(6, 64),
                                    head={"type": "ArcFaceClsHead", "num_classes": 2, "in_channels": 64})
    losses = trained(images, torch.tensor([0, 1, 0, 1]), mode="loss")
    assert losses["loss"].requires_grad and set(losses) == {"loss", "accuracy"}


def test_pretrained_encoder_config_builds_and_gives_pooled_features():
    from fewray.platform.retrieval import build_retriever, feature_dim, load_retrieval_config

    cfg = load_retrieval_config(REPO / "configs" / "retrieval" / "efficientnet_lite0_caltech101.yaml")
    r = build_retriever(cfg)
    assert feature_dim(r, 3, 84) == 1280


def test_retrieval_configs_load_and_bad_keys_are_named():
    from fewray.platform.retrieval import load_retrieval_config

    for path in sorted((REPO / "configs" / "retrieval").glob("*.yaml")):
        cfg = load_retrieval_config(path)
        assert cfg.name == f"retrieval_{path.stem}" and cfg.query.split == cfg.gallery.split == "test"
    conv = REPO / "configs" / "retrieval" / "conv4_caltech101.yaml"
    for override, message in [("model.topk=0", "config key 'model.topk'"),
                              ("model.image_encoder.type=NoNet", "unknown backbone type 'NoNet'"),
                              ("model.image_encoder.widht=3", "unknown config key 'model.image_encoder.widht'"),
                              ("gallery.splitt=test", "unknown config key 'gallery.splitt'"),
                              ("data.channels=1", "data.channels=1 does not fit the encoder")]:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
            load_retrieval_config(conv, [override])


# ---- Ray fan-out ------------------------------------------------------------------------------------------

@pytest.mark.slow  # 17-37 s of Ray fan-out: kept out of the 3-minute "not slow" run
def test_gallery_features_and_rankings_identical_with_one_and_two_workers(tiny_caltech, ray_local):
    from fewray.platform.retrieval import catalog_set, extract_features, rank_queries

    gallery = catalog_set(str(tiny_caltech), "test")
    enc = conv4()
    one = extract_features(enc, gallery, batch_size=4, channels=3, num_workers=1)
    two = extract_features(enc, gallery, batch_size=4, channels=3, num_workers=2)
    assert one.shape == (len(CLASSES) * PER_CLASS, 256)
    assert torch.equal(one, two)
    labels = np.array([CLASSES.index(c) for c in gallery.classes])
    r1 = rank_queries(one, None, "cosine_similarity", 5, labels, labels, num_workers=1, block=5)
    r2 = rank_queries(two, None, "cosine_similarity", 5, labels, labels, num_workers=2, block=5)
    assert r1.num_workers == 1 and r2.num_workers == 2
    assert np.array_equal(r1.indices, r2.indices) and np.array_equal(r1.scores, r2.scores)
    assert r1.metrics == r2.metrics and r1.metrics["num_queries"] == len(labels)
    assert all(i not in row for i, row in enumerate(r1.indices))  # leave-one-out


# ---- the pipeline -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pipeline_end_to_end_leave_one_out_then_query_images(tiny_caltech, tmp_path):
    from mlflow.tracking import MlflowClient

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = str(REPO / "configs" / "retrieval" / "conv4_caltech101.yaml")
    common = ["--config", config, "--set", f"data.image_size={SIZE}", "--gallery-root", str(tiny_caltech),
              "--tracking-uri", db]
    proc = run_pipeline("retrieve.py", *common, "--query-split", "test", "--topk", "3", "--output",
                        str(tmp_path / "loo.json"), "--dump-prototype", str(tmp_path / "gallery.pt"), "--show", "30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "loo.json").read_text())
    n = len(CLASSES) * PER_CLASS
    assert result["queries"]["num_items"] == result["gallery"]["num_items"] == n
    assert result["protocol"].startswith("leave-one-out")
    assert set(result["metrics"]) == {"Recall@1", "Recall@5", "Recall@10", "mAP@R", "num_queries"}
    assert all(0 <= v <= 100 for k, v in result["metrics"].items() if k != "num_queries")
    assert len(result["results"]) == n
    for i, item in enumerate(result["results"]):
        assert item["class"] in CLASSES and [t["rank"] for t in item["topk"]] == [1, 2, 3]
        assert all(t["index"] != i and t["class"] in CLASSES and t["name"].endswith(".jpg") for t in item["topk"])
        assert [t["score"] for t in item["topk"]] == sorted((t["score"] for t in item["topk"]), reverse=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == n + 1 and lines[0].startswith(result["results"][0]["query"]) and "mAP@R" in lines[-1]
    assert f"MLflow run {result['mlflow_run_id']}" in proc.stderr
    client = MlflowClient(db)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics["Recall_at_1"] == pytest.approx(result["metrics"]["Recall@1"])
    assert run.data.metrics["mAP_at_R"] == pytest.approx(result["metrics"]["mAP@R"])
    assert "result.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert torch.load(tmp_path / "gallery.pt", weights_only=True).shape == (n, 256)

    # two query images (files, unlabelled) against the saved gallery features: no extraction, no metrics
    queries = [str(sorted((CALTECH / c).iterdir())[PER_CLASS]) for c in ("ant", "barrel")]
    proc = run_pipeline("retrieve.py", *common, "--query", *queries, "--prototype", str(tmp_path / "gallery.pt"),
                        "--topk", "2", "--output", str(tmp_path / "files.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads((tmp_path / "files.json").read_text())
    assert files["metrics"] is None and [r["query"] for r in files["results"]] == queries
    names = {t["name"] for r in result["results"] for t in r["topk"]} | {r["query"] for r in result["results"]}
    assert all(len(r["topk"]) == 2 and {t["name"] for t in r["topk"]} <= names for r in files["results"])
    assert proc.stdout.strip().splitlines()[0].startswith(queries[0] + ": 1. ")


def _pipeline():
    sys.path.insert(0, str(REPO / "pipelines"))
    spec = importlib.util.spec_from_file_location("pipeline_retrieve", REPO / "pipelines" / "retrieve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(argv: list[str]) -> tuple[int, str]:
    """``pipelines/retrieve.py argv`` through its real ``run_cli(main)``: ``(exit code, stderr)``."""
    module, err, code = _pipeline(), io.StringIO(), None
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            module.run_cli(module.main, argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue()


def _bad_broken_image(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    return ["--query", str(bad)], f"cannot read image {bad}"


def _bad_prototype_dim(tmp_path):
    torch.save(torch.zeros(len(CLASSES) * PER_CLASS, 7), tmp_path / "other.pt")
    return (["--query-split", "test", "--prototype", str(tmp_path / "other.pt")],
            f"prototype file {tmp_path / 'other.pt'} holds 7-d features but the image encoder gives 256-d features")


def _bad_topk(tmp_path):
    return (["--query-split", "test", "--topk", "30"],
            "topk 30 is larger than the gallery (24 items, 23 per query when each query is left out")


def _missing_query(tmp_path):
    return ["--query", str(tmp_path / "nope.jpg")], f"image file not found: {tmp_path / 'nope.jpg'}"


def _bad_prototype_rows(tmp_path):
    torch.save(torch.zeros(5, 256), tmp_path / "small.pt")
    return (["--query-split", "test", "--prototype", str(tmp_path / "small.pt")],
            f"prototype file {tmp_path / 'small.pt'} holds features of 5 items but the gallery has 24 images")


def _no_queries(tmp_path):
    return ["--set", "query.split=null"], "no queries: give query image files (--query IMAGE ...) or a split"


@pytest.mark.parametrize("case", [_bad_topk, _bad_prototype_dim, _bad_prototype_rows, _bad_broken_image,
                                  _missing_query, _no_queries],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_one_line_and_writes_nothing(tiny_caltech, tmp_path, case):
    args, message = case(tmp_path)
    out = tmp_path / "out"
    code, err = run_in_process(["--config", str(REPO / "configs" / "retrieval" / "conv4_caltech101.yaml"),
                                "--set", f"data.image_size={SIZE}", "--gallery-root", str(tiny_caltech), *args,
                                "--output", str(out / "result.json"), "--dump-prototype", str(out / "g.pt"),
                                "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not out.exists()  # no result, no prototype file, no MLflow store


def test_checkpoint_backbone_is_the_encoder_and_dry_run_writes_nothing(tiny_caltech, tmp_path):
    from fewray.algorithms import build_classifier
    from fewray.platform.checkpoint import save_checkpoint
    from fewray.platform.config import load_config
    from fewray.platform.retrieval import prepare_retrieval, retrieval_config_from_checkpoint

    cfg = load_config(REPO / "configs" / "classification" / "proto_net" / "conv4_caltech101.yaml",
                      [f"data.root={tiny_caltech}", f"data.image_size={SIZE}"])
    torch.manual_seed(3)
    model = build_classifier(cfg.model)
    path = save_checkpoint(tmp_path / "ckpt", model=model.state_dict(), config=cfg.to_dict())
    rcfg = retrieval_config_from_checkpoint(path, ["model.topk=4"])
    assert rcfg.data.root == str(tiny_caltech) and rcfg.gallery.split == "test" and rcfg.model.topk == 4
    plan = prepare_retrieval(rcfg, str(path), query_images=[str(sorted((CALTECH / "ant").iterdir())[0])])
    want = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    got = plan.retriever.image_encoder.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)

    out = tmp_path / "out"
    code, err = run_in_process(["--checkpoint", str(path), "--query-split", "test", "--dry-run", "--output",
                                str(out / "r.json"), "--tracking-uri", f"sqlite:///{out / 'mlflow.db'}"])
    assert code == 0 and not out.exists(), err
    code, err = run_in_process(["--config", str(REPO / "configs" / "retrieval" / "efficientnet_lite0_caltech101.yaml"),
                                "--checkpoint", str(path), "--gallery-root", str(tiny_caltech), "--query-split", "test"])
    assert code == 2 and "has a Conv4 backbone; the config's model.image_encoder is EfficientNetLite0" in err, err


def test_folder_gallery_reads_loose_and_class_folder_images_and_names_a_broken_one(tmp_path):
    from fewray.platform.retrieval import folder_set

    (tmp_path / "cat").mkdir()
    for i, c in enumerate(CLASSES[:2]):
        src = sorted((CALTECH / c).iterdir())
        (tmp_path / f"loose{i}.jpg").symlink_to(src[0])
        (tmp_path / "cat" / f"{c}.jpg").symlink_to(src[1])
    (tmp_path / "notes.txt").write_text("not an image")
    g = folder_set(str(tmp_path), SIZE, 3)
    assert g.names == ["loose0.jpg", "loose1.jpg", "cat/accordion.jpg", "cat/anchor.jpg"]
    assert g.classes == [None, None, "cat", "cat"] and not g.labelled and g.images.shape == (4, 3, SIZE, SIZE)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG nothing")
    with pytest.raises(DataError, match=f"cannot read image {tmp_path / 'cat' / 'broken.png'}"):
        folder_set(str(tmp_path), SIZE, 3)


def test_neither_config_nor_checkpoint_is_a_one_line_error():
    code, err = run_in_process(["--query-split", "test"])
    assert code == 2 and err.strip() == ("error: give --config (a retrieval config) or --checkpoint (a fewray "
                                         "checkpoint), or both"), err
