"""ArcFaceClsHead (ArcFace, sub-center ArcFace, adaptive margins) against hand computations; ArcFaceBaseline,
its configs, its one-line config errors, and a tiny pre-training on real Omniglot images."""

import doctest
import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import OMNIGLOT_RELEASE, REPO
from fewray.algorithms import HEADS, build_classifier
from fewray.algorithms.cls_heads import ArcFaceClsHead, adaptive_margins
from fewray.algorithms.heads import CosineDistanceHead
from fewray.core.errors import ConfigError

torch.set_num_threads(1)
S = 10.0  # the scale of the hand-computed examples
CONFIGS = sorted((REPO / "configs" / "classification" / "arcface").glob("*.yaml"))


def _unit(*angles: float) -> torch.Tensor:
    """Rows ``(cos a, sin a)``: 2-d unit vectors at the given angles (radians)."""
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles])


def _head(weight_angles=(0.0, math.pi / 2, math.pi), **kw) -> ArcFaceClsHead:
    """A 2-d head whose class (or sub-center) weights point at ``weight_angles``."""
    kw = {"num_classes": len(weight_angles) // kw.get("num_subcenters", 1), "in_channels": 2, "scale": S, **kw}
    head = ArcFaceClsHead(**kw)
    with torch.no_grad():
        head.fc.weight.copy_(_unit(*weight_angles) * 2.5)  # any norm: only directions count
    return head


def test_target_logit_is_s_cos_theta_plus_m_and_inference_is_s_cos():
    head = _head(margins=0.5)
    a = math.pi / 3  # the feature's angle: theta = (pi/3, pi/6, 2pi/3) to the classes at 0, pi/2, pi
    x = _unit(a) * 3.0
    cos = [0.5, math.cos(math.pi / 6), -0.5]
    torch.testing.assert_close(head(x), S * torch.tensor([cos]))  # prediction: plain scaled cosine
    torch.testing.assert_close(head.forward_query(x), S * torch.tensor([cos]))
    train = head(x, torch.tensor([0]))
    torch.testing.assert_close(train, S * torch.tensor([[math.cos(math.pi / 3 + 0.5), cos[1], cos[2]]]))
    train1 = head(x, torch.tensor([1]))  # the margin goes to the target class only
    torch.testing.assert_close(train1, S * torch.tensor([[cos[0], math.cos(math.pi / 6 + 0.5), cos[2]]]))
    out = head.forward_train(x, torch.tensor([0]))
    torch.testing.assert_close(out["loss"], F.cross_entropy(train, torch.tensor([0])))
    assert float(out["accuracy"]) == 0.0  # accuracy of the prediction logits: class 1 is nearer


def test_fallback_past_pi_and_easy_margin():
    m = 0.5
    head, easy = _head(margins=m), _head(margins=m, easy_margin=True)
    y = torch.tensor([0])
    # theta + m > pi (2.9 + 0.5): cos(theta + m) would rise again -> s * (cos(theta) - m sin(m))
    theta = 2.9
    assert math.cos(theta) < -math.cos(m)  # the threshold rule mmpretrain uses
    got = head(_unit(theta), y)[0, 0]
    torch.testing.assert_close(got, torch.tensor(S * (math.cos(theta) - m * math.sin(m))))
    # theta + m < pi: the margin applies, for easy_margin only where cos(theta) > 0
    for theta, hard, soft in [(2.0, math.cos(2.5), math.cos(2.0)), (1.0, math.cos(1.5), math.cos(1.5))]:
        torch.testing.assert_close(head(_unit(theta), y)[0, 0], torch.tensor(S * hard))
        torch.testing.assert_close(easy(_unit(theta), y)[0, 0], torch.tensor(S * soft))
    # gradients stay finite where the cosine is exactly +-1 (acos' is infinite there)
    head.zero_grad()
    x = _unit(0.0, math.pi).requires_grad_()
    head.forward_train(x, torch.tensor([0, 0]))["loss"].backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.fc.weight.grad).all()


def test_subcenters_take_the_max_cosine_per_class():
    # class 0: sub-centers at 0 and pi/2; class 1: at pi and -pi/2 (rows c*K + k, mmpretrain's order)
    head = _head((0.0, math.pi / 2, math.pi, -math.pi / 2), num_subcenters=2, margins=0.3)
    assert head.fc.weight.shape == (4, 2)
    x = _unit(math.pi / 3)
    best = [math.cos(math.pi / 6), math.cos(2 * math.pi / 3)]  # max(cos 60, cos 30), max(cos 120, cos 150)
    torch.testing.assert_close(head(x), S * torch.tensor([best]))
    torch.testing.assert_close(head(x, torch.tensor([0])),  # the margin is added to the nearest sub-center's angle
                               S * torch.tensor([[math.cos(math.pi / 6 + 0.3), best[1]]]))


def test_per_class_margins_from_a_list_and_a_txt_file(tmp_path):
    margins = [0.1, 0.3, 0.5]
    f = tmp_path / "margins.txt"
    f.write_text("0.1\n0.3\n\n0.5\n")  # blank lines are skipped
    x = _unit(math.pi / 3).repeat(3, 1)
    y = torch.tensor([0, 1, 2])
    theta = [math.pi / 3, math.pi / 6, 2 * math.pi / 3]
    expected = S * torch.tensor([math.cos(t + m) for t, m in zip(theta, margins)])
    for source in (margins, str(f)):
        head = _head(margins=source)
        torch.testing.assert_close(head.margins, torch.tensor(margins))
        torch.testing.assert_close(head(x, y).diagonal(), expected)
    built = HEADS.build({"type": "ArcFaceClsHead", "num_classes": 3, "in_channels": 2, "margins": str(f)})
    torch.testing.assert_close(built.margins, torch.tensor(margins))


def test_adaptive_margins_formula_on_a_hand_computed_example():
    # counts 1, 16, 81 and 0 (counted as 1): n^-0.25 = 1, 1/2, 1/3, 1 -> normalised (f - 1/3) / (2/3) = 1, 1/4, 0, 1
    torch.testing.assert_close(adaptive_margins([1, 16, 81, 0]), torch.tensor([0.5, 0.05 + 0.45 / 4, 0.05, 0.5]))
    torch.testing.assert_close(adaptive_margins(np.array([1, 16, 81]), margin_min=0.1, margin_max=0.3),
                               torch.tensor([0.3, 0.15, 0.1]))
    # power 0.5: n^0.5 = 1, 4, 9 -> 0, 3/8, 1 (the most frequent class gets margin_max)
    torch.testing.assert_close(adaptive_margins([1, 16, 81], power=0.5), torch.tensor([0.05, 0.05 + 0.45 * 3 / 8, 0.5]))
    # equal counts (Omniglot: 20 images per class): 0/0 in mmpretrain; here every class gets margin_max
    torch.testing.assert_close(adaptive_margins([20, 20, 20]), torch.full((3,), 0.5))
    for bad, match in [([], "at least one class"), ([3, -1], ">= 0")]:
        with pytest.raises(ValueError, match=match):
            adaptive_margins(bad)
    with pytest.raises(ValueError, match="margin_min"):
        adaptive_margins([1, 2], margin_min=0.6, margin_max=0.5)


def test_set_margins_changes_training_logits_and_travels_with_the_weights():
    head = _head(margins=0.5)
    x, y = _unit(math.pi / 3).repeat(3, 1), torch.tensor([0, 1, 2])
    head.set_margins(adaptive_margins([1, 16, 81]))
    torch.testing.assert_close(head.margins, torch.tensor([0.5, 0.1625, 0.05]))
    theta = [math.pi / 3, math.pi / 6, 2 * math.pi / 3]
    torch.testing.assert_close(head(x, y).diagonal(),
                               S * torch.tensor([math.cos(t + m) for t, m in zip(theta, [0.5, 0.1625, 0.05])]))
    fresh = _head(margins=0.5)
    fresh.load_state_dict(head.state_dict())  # a checkpoint keeps margins set at training start
    torch.testing.assert_close(fresh.margins, head.margins)
    head.set_margins(0.2)
    torch.testing.assert_close(head.margins, torch.full((3,), 0.2))
    with pytest.raises(ConfigError, match="4 margins given but num_classes is 3"):
        head.set_margins([0.1, 0.2, 0.3, 0.4])


def _one_line_config_error(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        HEADS.build({"type": "ArcFaceClsHead", "in_channels": 2, **cfg}, "model.head")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_margins_and_subcenters_are_one_line_config_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1\n0.2\nabc\n")
    msg = _one_line_config_error({"num_classes": 3, "margins": str(bad)})
    assert msg == f"config key 'model.head.margins': line 3 of {bad} is not a finite number: 'abc'"
    msg = _one_line_config_error({"num_classes": 3, "margins": [0.1, 0.2]})
    assert msg == "config key 'model.head.margins': 2 margins given but num_classes is 3 (one margin per class)"
    short = tmp_path / "short.txt"
    short.write_text("0.1\n0.2\n")
    msg = _one_line_config_error({"num_classes": 3, "margins": str(short)})
    assert msg.startswith(f"config key 'model.head.margins': margins file {short} holds 2 margins but num_classes is 3")
    missing = tmp_path / "missing.txt"
    msg = _one_line_config_error({"num_classes": 3, "margins": str(missing)})
    assert msg == f"config key 'model.head.margins': margins file not found: {missing}"
    msg = _one_line_config_error({"num_classes": 3, "num_subcenters": 0})
    assert msg == "config key 'model.head.num_subcenters': must be an integer >= 1, got 0"
    msg = _one_line_config_error({"num_classes": 3, "margins": [0.1, "nan", 0.3]})  # pydantic reads "nan"
    assert msg == "config key 'model.head.margins': margins[1] is not a finite number: nan"
    msg = _one_line_config_error({"num_classes": 3, "scael": 3.0})  # the registry's own checks still apply
    assert msg == "unknown config key 'model.head.scael'"


def _blobs(ways, per_class, dim=8, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(ways, dim, generator=g) * 3
    labels = torch.arange(ways).repeat(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def _protocol(model, support, labels, query):
    model.before_forward_support()
    model(mode="support", feats=support, label=labels)
    model.before_forward_query()
    return model(mode="query", feats=query)


@pytest.mark.parametrize("meta_test_head", [None, {"type": "ArcFaceClsHead", "scale": 10.0, "margins": 0.2}])
def test_arcface_baseline_meta_tests_with_baseline_pp_head_batched_equal_to_protocol(meta_test_head):
    extra = {"meta_test_head": meta_test_head} if meta_test_head else {}
    model = build_classifier({"type": "ArcFaceBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
                              "head": {"type": "ArcFaceClsHead", "num_classes": 10, "in_channels": 8,
                                       "margins": [0.5] * 10}, "finetune_steps": 15, **extra})
    assert model.train_on_batches  # pre-trained on plain labelled batches, as Baseline++
    head_type = ArcFaceClsHead if meta_test_head else CosineDistanceHead  # default: Baseline++'s cosine head
    assert type(model.new_task_head(4)) is head_type and model.new_task_head(4).num_classes == 4
    model.before_meta_test({"finetune_batch_size": 3, "finetune_lr": 0.1})
    support = torch.stack([_blobs(4, 2, seed=t, spread=3.0)[0] for t in range(3)])
    labels = torch.stack([torch.randperm(8) % 4 for _ in range(3)])
    query = torch.randn(3, 5, 8)
    with torch.no_grad():  # the vmap-batched fine-tuning of all tasks = the per-task protocol
        batched = model.forward_tasks(support, labels, query, 4)
        for t in range(3):
            torch.testing.assert_close(batched[t], _protocol(model, support[t], labels[t], query[t]),
                                       rtol=1e-4, atol=1e-4)


def test_arcface_baseline_adaptive_margins_hook_and_errors():
    cfg = {"type": "ArcFaceBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
           "head": {"type": "ArcFaceClsHead", "num_classes": 3, "in_channels": 64},
           "adaptive_margins": {"margin_min": 0.1, "margin_max": 0.3}}
    model = build_classifier(cfg)
    img, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match=r"before_train\(class_counts\) was not called"):
        model(mode="train", img=img, gt_label=y)
    with pytest.raises(ValueError, match="2 class counts but model.head.num_classes is 3"):
        model.before_train(class_counts=[5, 5])
    model.before_train(class_counts=np.bincount(np.repeat([0, 1, 2], [16, 64, 96])))
    torch.testing.assert_close(model.head.margins, adaptive_margins([16, 64, 96], margin_min=0.1, margin_max=0.3))
    assert torch.isfinite(model(mode="train", img=img, gt_label=y)["loss"])
    plain = build_classifier({**cfg, "adaptive_margins": None})
    plain.before_train(class_counts=[1, 2, 3])  # no adaptive margins: the hook leaves the head's margins
    torch.testing.assert_close(plain.head.margins, torch.full((3,), 0.5))
    with pytest.raises(ConfigError, match=r"^unknown config key 'model.adaptive_margins.powr'$"):
        build_classifier({**cfg, "adaptive_margins": {"powr": -0.5}}, validate_only=True)
    with pytest.raises(ConfigError, match=r"^config key 'model.head.type': ArcFaceBaseline pre-trains with an "
                                          r"ArcFaceClsHead, got CosineDistanceHead$"):
        build_classifier({**cfg, "adaptive_margins": None, "head": {"type": "CosineDistanceHead"}})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_arcface_configs_validate_build_and_follow_the_zoo_names(path):
    from fewray.platform.config import load_config

    cfg = load_config(path)  # validates the model section (build_classifier(validate_only=True))
    assert cfg.name == cfg.tracking.experiment == f"arcface_{path.stem}"  # zoo name <method>_<backbone>_<dataset>
    assert cfg.model.type == "ArcFaceBaseline" and cfg.model.head["type"] == "ArcFaceClsHead"
    assert "num_classes" not in cfg.model.head  # filled with the train split's class count
    assert cfg.model.model_dump()["meta_test_head"] == {"type": "CosineDistanceHead"}
    model = build_classifier({**cfg.model.model_dump(), "head": {**cfg.model.head, "num_classes": 7}})
    size = cfg.data.image_size
    feats = model(mode="extract", img=torch.rand(2, cfg.data.channels, size, size))
    assert feats.shape == (2, cfg.model.head["in_channels"])
    assert model.head.num_subcenters == (3 if "subcenter3" in path.stem else 1)
    assert (model.adaptive_margins_cfg is not None) == path.stem.endswith("_adaptive")


def test_arcface_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"conv4_omniglot", "conv4_caltech101", "conv4_omniglot_subcenter3",
                                         "conv4_caltech101_subcenter3", "conv4_caltech101_subcenter3_adaptive"}


def _omniglot_subset(first: int, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_classes`` characters (from the ``first``-th, sorted) of the real background release, 20 images
    each, 28x28 in ``[0, 1]``: ``(n_classes * 20, 1, 28, 28)`` and labels ``0..n_classes-1``."""
    zf = zipfile.ZipFile(Path(OMNIGLOT_RELEASE) / "images_background.zip")
    by_char: dict[str, list[str]] = {}
    for name in sorted(n for n in zf.namelist() if n.endswith(".png")):
        by_char.setdefault(name.rsplit("/", 1)[0], []).append(name)
    imgs, labels = [], []
    for c, char in enumerate(sorted(by_char)[first:first + n_classes]):
        for name in by_char[char]:
            im = Image.open(io.BytesIO(zf.read(name))).convert("L").resize((28, 28), Image.BILINEAR)
            imgs.append(np.asarray(im, dtype=np.float32) / 255.0)
            labels.append(c)
    return torch.from_numpy(np.stack(imgs))[:, None], torch.tensor(labels)


@pytest.mark.parametrize("num_subcenters", [1, 3])
def test_arcface_pretraining_on_real_omniglot_lowers_the_loss_then_meta_tests(num_subcenters):
    """20 Adam steps of the omniglot config's model on 10 real characters (200 images): the loss falls;
    then 5-way 1-shot tasks on 5 other characters run through the Baseline++ fine-tune meta-test."""
    from fewray.platform.config import load_config

    cfg = load_config(REPO / "configs" / "classification" / "arcface" / "conv4_omniglot.yaml")
    x, y = _omniglot_subset(0, 10)
    torch.manual_seed(0)
    model = build_classifier({**cfg.model.model_dump(), "finetune_steps": 20,
                              "head": {**cfg.model.head, "num_classes": 10, "num_subcenters": num_subcenters}})
    model.before_train(class_counts=np.bincount(y.numpy()))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.optimizer.lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(20):
        idx = torch.randint(0, len(y), (32,), generator=g)
        out = model(mode="train", img=x[idx], gt_label=y[idx])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    model.before_meta_test()
    tx, ty = _omniglot_subset(10, 5)
    with torch.no_grad():
        feats = model(mode="extract", img=tx).view(5, 20, -1)
        support = feats[:, :1].reshape(1, 5, -1)  # one task: image 0 of each class as the support set
        query = feats[:, 1:].reshape(1, 95, -1)
        scores = model.forward_tasks(support, torch.arange(5)[None], query, 5)
    assert scores.shape == (1, 95, 5) and torch.isfinite(scores).all()


def test_docstring_examples_run():
    import fewray.algorithms.cls_heads.arcface_cls_head as module

    result = doctest.testmod(module, extraglobs={"torch": torch, "ArcFaceClsHead": ArcFaceClsHead}, verbose=False)
    assert result.failed == 0 and result.attempted >= 4


@pytest.mark.slow
def test_arcface_config_pretrains_with_ray_train_and_meta_tests(omniglot_catalog, ray_local, tmp_path):
    """The omniglot config through the platform (Ray Train on plain batches, meta-validation, a checkpoint
    holding the margins, the fine-tune meta-test), on a tiny schedule."""
    import mlflow

    from fewray.platform.checkpoint import load_checkpoint
    from fewray.platform.config import load_config
    from fewray.data.catalog import read_labels
    from fewray.platform.metatest import meta_test_checkpoint
    from fewray.platform.train import run_metatrain

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = [f"data.root={omniglot_catalog}", "train.batch_size=32", "train.num_steps=12", "train.val_interval=6",
            "train.log_interval=6", "train.torch_threads=1", "val.num_tasks=20", "test.num_tasks=10"]
    config = REPO / "configs" / "classification" / "arcface" / "conv4_omniglot.yaml"
    result = run_metatrain(load_config(config, tiny), tmp_path / "arcface", tracking_uri=uri)
    n_base = int(read_labels(str(omniglot_catalog), "train").max()) + 1
    state = load_checkpoint(result["latest_checkpoint"])
    assert state["model"]["head.fc.weight"].shape == (n_base, 64)  # one weight per base class
    torch.testing.assert_close(state["model"]["head.margins"], torch.full((n_base,), 0.5))
    losses = [m.value for m in mlflow.tracking.MlflowClient(uri).get_metric_history(result["mlflow_run_id"], "loss")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    tested = meta_test_checkpoint(load_config(config, tiny), result["best_checkpoint"], num_workers=1,
                                  tracking_uri=uri)
    assert tested["num_tasks"] == 10 and 0.0 <= tested["accuracy_mean"] <= 100.0
