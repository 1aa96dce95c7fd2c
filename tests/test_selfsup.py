"""Self-supervised learning (issue 14): NT-Xent, NonLinearNeck, BaseSelfSupervisor / SimCLR and the two-view
batch builder, on real Omniglot and Caltech-101 images."""

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import SHARED_DATA
from fewray.algorithms import LOSSES, NECKS, SELFSUP
from fewray.algorithms.selfsup import BaseSelfSupervisor, SimCLR
from fewray.core.errors import CheckpointError, ConfigError
from fewray.data.catalog import encode_png, write_split
from fewray.data.multiview import MultiViewBuilder, simclr_transform
from fewray.platform.errors import DataError

torch.set_num_threads(1)

NECK = {"type": "NonLinearNeck", "in_channels": 64, "hid_channels": 128, "out_channels": 64}


def simclr(**kw) -> SimCLR:
    cfg = {"type": "SimCLR", "backbone": {"type": "Conv4", "in_channels": 1}, "neck": NECK,
           "head": {"type": "NTXentLoss", "temperature": 0.1}, **kw}
    return SELFSUP.build(cfg, "model")


# ---------------------------------------------------------------- real images: tiny catalogs written here


def _omniglot_images(n_chars: int = 20, per_char: int = 2, size: int = 28) -> list[Image.Image]:
    """The first ``per_char`` drawings of the first ``n_chars`` characters of Omniglot's background set."""
    with zipfile.ZipFile(SHARED_DATA / "omniglot" / "images_background.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        by_char: dict[str, list[str]] = {}
        for n in names:
            by_char.setdefault(n.rsplit("/", 1)[0], []).append(n)
        picked = [n for char in sorted(by_char)[:n_chars] for n in by_char[char][:per_char]]
        return [Image.open(z.open(n)).convert("L").resize((size, size), Image.LANCZOS) for n in picked]


def _caltech_images(n: int = 12, size: int = 32) -> list[Image.Image]:
    root = SHARED_DATA / "caltech101" / "101_ObjectCategories"
    classes = ("airplanes", "Faces", "Leopards", "Motorbikes")
    files = [f for c in classes for f in sorted((root / c).glob("*.jpg"))[:n // 4]]
    return [Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR) for f in files]


def _catalog(root: Path, images: list[Image.Image]) -> Path:
    labels = [i // 2 for i in range(len(images))]
    write_split(root, "train", {"image": [encode_png(im) for im in images], "label": labels,
                                "class_name": [f"c{y}" for y in labels]})
    return root


@pytest.fixture(scope="module")
def omniglot_root(tmp_path_factory) -> Path:
    """40 real Omniglot drawings (20 characters x 2), 28x28 grayscale, as a one-split catalog."""
    return _catalog(tmp_path_factory.mktemp("omniglot_mini"), _omniglot_images())


@pytest.fixture(scope="module")
def caltech_root(tmp_path_factory) -> Path:
    """12 real Caltech-101 photos (4 classes), 32x32 RGB, as a one-split catalog."""
    return _catalog(tmp_path_factory.mktemp("caltech_mini"), _caltech_images())


# ---------------------------------------------------------------- NT-Xent


def test_nt_xent_matches_a_hand_computation():
    """2 images x 2 views: z = [a, b, c, d] with a = (1, 0), b = (0, 1) the first views and c = (3, 4) / 5,
    d = (1, 1) / sqrt(2) the second ones (given unnormalised), tau = 0.5. Row i's positive is i's other view."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    t, r = 0.5, 1 / math.sqrt(2)
    ab, ac, ad, bc, bd, cd = 0.0, 0.6, r, 0.8, r, 1.4 * r  # cosine similarities

    def row(pos, *neg):
        return -math.log(math.exp(pos / t) / (math.exp(pos / t) + sum(math.exp(n / t) for n in neg)))

    rows = [row(ac, ab, ad), row(bd, ab, bc), row(ac, bc, cd), row(bd, ad, cd)]  # a, b, c, d
    assert sum(rows) / 4 == pytest.approx(1.1733962, abs=1e-6)  # the same sum, by hand once
    loss = LOSSES.build({"type": "NTXentLoss", "temperature": t})
    assert float(loss(z1, z2)) == pytest.approx(sum(rows) / 4, abs=1e-6)
    per_row = loss(z1, z2, reduction_override="none")
    torch.testing.assert_close(per_row, torch.tensor(rows), atol=1e-6, rtol=0)
    assert float(LOSSES.build({"type": "NTXentLoss", "temperature": t, "loss_weight": 2.0})(z1, z2)) == \
        pytest.approx(sum(rows) / 2, abs=1e-6)
    scores, target = loss.logits(z1, z2)
    assert target.tolist() == [2, 3, 0, 1] and torch.isinf(scores.diagonal()).all()


def test_nt_xent_equals_mmpretrains_positive_negative_split():
    """mmpretrain: drop the diagonal, split the (2B, 2B-1) similarities into the positive and 2B-2 negatives,
    cross-entropy of cat([pos, neg]) / tau against class 0 (views interleaved x1_0, x2_0, x1_1, ...)."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    z = F.normalize(torch.stack([z1, z2], 1).reshape(10, 8), dim=1)
    s = (z @ z.t())[~torch.eye(10, dtype=torch.bool)].reshape(10, 9)
    pos_col = torch.tensor([0, 0, 2, 2, 4, 4, 6, 6, 8, 8])  # the partner's column once the diagonal is gone
    pos = s.gather(1, pos_col[:, None])
    neg = s[torch.ones(10, 9, dtype=torch.bool).scatter_(1, pos_col[:, None], False)].reshape(10, 8)
    expected = F.cross_entropy(torch.cat([pos, neg], 1) / 0.2, torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(LOSSES.build({"type": "NTXentLoss", "temperature": 0.2})(z1, z2), expected)


def test_nt_xent_rejects_bad_input():
    loss = LOSSES.build({"type": "NTXentLoss"})
    with pytest.raises(ValueError, match="at least 2 images per view"):
        loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"\(B, D\) tensors of one shape"):
        loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        LOSSES.build({"type": "NTXentLoss", "temperature": 0})
    with pytest.raises(ConfigError, match="reduction"):
        LOSSES.build({"type": "NTXentLoss", "reduction": "avg"})


# ---------------------------------------------------------------- NonLinearNeck


def test_nonlinear_neck_structure_shapes_and_errors():
    neck = NECKS.build({**NECK, "num_layers": 3})
    assert [n for n, _ in neck.named_children() if n != "relu"] == ["fc0", "bn0", "fc1", "bn1", "fc2", "bn2"]
    assert neck.fc0.bias is None and neck.fc2.bias is None  # mmpretrain: no biases by default
    assert neck(torch.randn(5, 64, 3, 3)).shape == (5, 64)
    assert neck(torch.randn(5, 64)).shape == (5, 64)
    assert neck([torch.randn(5, 32), torch.randn(5, 64)]).shape == (5, 64)  # a tuple of stages: the last
    bare = NECKS.build({**NECK, "with_last_bn": False, "with_last_bias": True})
    assert not hasattr(bare, "bn1") and bare.fc1.bias is not None
    assert NECKS.build({**NECK, "with_last_bn_affine": False}).bn1.weight is None
    with pytest.raises(ValueError, match="expects 64 input features.*got 1600"):
        neck(torch.randn(5, 1600))  # Conv4 at 84x84 flattens to 64 x 5 x 5
    with pytest.raises(ConfigError, match="num_layers must be >= 1"):
        NECKS.build({**NECK, "num_layers": 0})
    with pytest.raises(ConfigError, match="unknown config key 'neck.norm_cfg'"):
        NECKS.build({**NECK, "norm_cfg": {"type": "SyncBN"}})


# ---------------------------------------------------------------- SimCLR / BaseSelfSupervisor


def test_simclr_builds_from_a_dict_and_names_bad_keys():
    model = simclr()
    assert isinstance(model, BaseSelfSupervisor) and model.with_neck and model.with_head
    assert not model.with_target_generator
    assert SimCLR(backbone={"type": "Conv4", "in_channels": 1}).head.temperature == 0.1  # default head
    bad = [
        ({"backbone": {"type": "Conv4", "in_chanels": 1}}, "unknown config key 'model.backbone.in_chanels'"),
        ({"neck": {"in_channels": 64}}, "config key 'model.neck.type' is missing"),
        ({"head": {"type": "PrototypeHead"}}, "SimCLR's head is the contrastive loss"),
        ({"head": {"type": "NoSuchLoss"}}, "config key 'model.head.type': unknown type 'NoSuchLoss'"),
        ({"temperature": 0.5}, "unknown config key 'model.temperature'"),
        ({"target_generator": {"type": "HOG"}}, "model.target_generator"),
        ({"data_preprocessor": {"mean": [0.5], "std": [0.0]}}, "model.data_preprocessor.std"),
    ]
    for extra, message in bad:
        with pytest.raises(ConfigError, match=message):
            simclr(**extra)


def test_simclr_forward_modes_and_input_forms():
    torch.manual_seed(0)
    model = simclr()
    v1, v2 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    out = model([v1, v2])  # training mode, no mode: the losses (torchvision's convention)
    assert set(out) == {"loss", "accuracy"} and out["loss"].requires_grad and not out["accuracy"].requires_grad
    assert 0.0 <= float(out["accuracy"]) <= 1.0
    torch.testing.assert_close(model(torch.cat([v1, v2]), mode="train")["loss"], out["loss"])  # (2B, ...) form
    torch.testing.assert_close(model((v1, v2), mode="loss")["loss"], out["loss"])
    model.eval()
    feats = model(v1)
    assert feats.shape == (4, 64)
    torch.testing.assert_close(model([v1, v2], mode="tensor"), feats)  # mmpretrain: features of the first view
    torch.testing.assert_close(model.extract_feat(v1), model(v1, mode="extract"))
    model.train()
    with pytest.raises(ValueError, match="unknown forward mode 'predict'"):
        model(v1, mode="predict")
    with pytest.raises(ValueError, match="two views"):
        model([v1, v2, v1])
    with pytest.raises(ValueError, match="of one shape"):
        model([v1, v2[:3]])
    with pytest.raises(ValueError, match="even first dimension"):
        model(torch.rand(7, 1, 28, 28))
    with pytest.raises(ValueError, match="float images in \\[0, 1\\], got torch.uint8"):
        model([torch.zeros(4, 1, 28, 28, dtype=torch.uint8)] * 2)
    with pytest.raises(ValueError, match="at least 2 images per view"):
        model.eval()([v1[:1], v2[:1]], mode="loss")


def test_data_preprocessor_standardises_each_view():
    seen = []
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    model = SimCLR(backbone=backbone, data_preprocessor={"mean": [0.5], "std": [0.5]})
    model([torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)])
    assert seen[0].tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]] * 2 + [[[[-1.0, -1.0], [-1.0, -1.0]]]] * 2


def test_get_layer_depth_on_conv4_and_resnet12():
    model = simclr()
    depths = {n: model.get_layer_depth(n) for n, _ in model.named_parameters()}
    assert depths["backbone.layers.0.0.weight"] == (0, 5)   # block 0 (the stem)
    assert depths["backbone.layers.1.1.bias"] == (1, 5)     # block 1's batch norm
    assert depths["backbone.layers.3.0.weight"] == (3, 5)
    assert depths["neck.fc0.weight"] == depths["neck.bn1.bias"] == (4, 5)  # after the backbone: the last depth
    assert sorted({d for d, _ in depths.values()}) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="'backbone.layers.9.weight' is not a parameter of SimCLR"):
        model.get_layer_depth("backbone.layers.9.weight")
    r12 = SimCLR(backbone={"type": "ResNet12"}, neck={**NECK, "in_channels": 640})
    assert r12.get_layer_depth("backbone.layer1.conv1.weight") == (0, 5)
    assert r12.get_layer_depth("backbone.layer4.downsample.0.weight") == (3, 5)


def test_get_layer_depth_asks_a_backbone_that_knows_its_own():
    class Own(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x.flatten(1))

        def get_layer_depth(self, param_name, prefix=""):
            return (0, 7) if param_name.startswith(prefix) else (6, 7)

    model = SimCLR(backbone=Own())
    assert model.get_layer_depth("backbone.fc.weight") == (0, 7)


def test_pretrained_loads_weights_only_and_names_the_problem(tmp_path):
    torch.manual_seed(0)
    source = simclr()
    torch.save(source.state_dict(), tmp_path / "simclr.pth")
    (tmp_path / "run").mkdir()
    torch.save({"model": source.state_dict(), "step": 3}, tmp_path / "run" / "checkpoint.pt")
    for path in (tmp_path / "simclr.pth", tmp_path / "run", tmp_path / "run" / "checkpoint.pt"):
        torch.manual_seed(1)
        model = simclr(pretrained=str(path))
        for key, value in source.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value)
    assert SimCLR.init_file_args == ("pretrained",)

    with pytest.raises(CheckpointError, match=f"checkpoint not found: {tmp_path / 'nope.pth'}"):
        simclr(pretrained=str(tmp_path / "nope.pth"))
    wide = SELFSUP.build({"type": "SimCLR", "backbone": {"type": "Conv4", "in_channels": 1},
                          "neck": {**NECK, "out_channels": 32}})
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match=r"wide\.pth do not fit SimCLR: 'neck\.fc1\.weight' has shape "
                                              r"\(32, 128\) in the checkpoint, \(64, 128\) in the model"):
        simclr(pretrained=str(tmp_path / "wide.pth"))
    torch.save({"backbone." + k: v for k, v in source.backbone.state_dict().items()}, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match="'neck.fc0.weight' is missing from the checkpoint"):
        simclr(pretrained=str(tmp_path / "backbone.pth"))
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="tensor.pth are not a state dict"):
        simclr(pretrained=str(tmp_path / "tensor.pth"))
    torch.save({"model": source.state_dict(), "opt": Path("x")}, tmp_path / "objects.pth")
    with pytest.raises(CheckpointError, match="holds Python objects"):
        simclr(pretrained=str(tmp_path / "objects.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: the file is empty"):
        simclr(pretrained=str(tmp_path / "empty.pth"))


# ---------------------------------------------------------------- the two-view batch builder


def test_multiview_builder_is_deterministic_and_makes_different_views(caltech_root):
    a = MultiViewBuilder(str(caltech_root), "train", 3, batch_size=5, seed=3)
    b = MultiViewBuilder(str(caltech_root), "train", 3, batch_size=5, seed=3)
    out = a({"id": np.array([4, 0])})
    assert set(out) == {"batch_id", "view1", "view2"} and out["batch_id"].tolist() == [4, 0]
    assert out["view1"].shape == out["view2"].shape == (2, 5, 3, 32, 32) and out["view1"].dtype == np.uint8
    for i, batch_id in enumerate((4, 0)):
        v1, v2 = b.views(batch_id)  # another builder (another worker), in another order: the same batch
        assert np.array_equal(v1, out["view1"][i]) and np.array_equal(v2, out["view2"][i])
        assert (v1 != v2).any(axis=(1, 2, 3)).all()  # every image's two views differ
    assert not np.array_equal(a.views(1)[0], a.views(2)[0])
    other_seed = MultiViewBuilder(str(caltech_root), "train", 3, batch_size=5, seed=4)
    assert not np.array_equal(other_seed.views(0)[0], out["view1"][1])
    # the images of a batch: BatchBuilder's shuffled epochs (12 images: batches 0-1 and part of 2 are epoch 0)
    perm0, perm1 = (np.random.default_rng([3, e]).permutation(12) for e in (0, 1))
    assert a.indices(0).tolist() == perm0[:5].tolist()
    assert a.indices(2).tolist() == perm0[10:].tolist() + perm1[:3].tolist()
    assert MultiViewBuilder(str(caltech_root), "train", 3, 2, 0, image_size=24).views(0)[0].shape == (2, 3, 24, 24)


def test_multiview_builder_on_grayscale_skips_colour_ops(omniglot_root):
    builder = MultiViewBuilder(str(omniglot_root), "train", 1, batch_size=8, seed=0)
    v1, v2 = builder.views(0)
    assert v1.shape == (8, 1, 28, 28) and (v1 != v2).any()
    names = [type(t).__name__ for t in builder.transform.transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip"]
    rgb = [type(t).__name__ for t in simclr_transform(32, 3).transforms]
    assert rgb == ["RandomResizedCrop", "RandomHorizontalFlip", "RandomApply", "RandomGrayscale"]


def test_multiview_builder_rejects_bad_input(tmp_path, omniglot_root):
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        MultiViewBuilder(str(omniglot_root), "train", 1, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="crop_scale"):
        MultiViewBuilder(str(omniglot_root), "train", 1, batch_size=2, seed=0, crop_scale=(0.0, 1.0))
    with pytest.raises(DataError, match="split 'val' not found"):
        MultiViewBuilder(str(omniglot_root), "val", 1, batch_size=2, seed=0)
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "empty").mkdir()
    pq.write_table(pa.table({"image": pa.array([], pa.binary()), "label": pa.array([], pa.int32()),
                             "class_name": pa.array([], pa.string())}), tmp_path / "empty" / "train.parquet")
    with pytest.raises(DataError, match="the train split of .* has no images"):
        MultiViewBuilder(str(tmp_path / "empty"), "train", 1, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="uint8 array"):
        MultiViewBuilder.from_images(np.zeros((4, 1, 8, 8), dtype=np.float32), batch_size=2, seed=0)


# ---------------------------------------------------------------- training


def test_simclr_loss_decreases_on_real_omniglot_views(omniglot_root):
    """30 Adam steps on one fixed batch of 16 real drawings seen twice: the contrastive task is learnt."""
    builder = MultiViewBuilder(str(omniglot_root), "train", 1, batch_size=16, seed=0, crop_scale=(0.3, 1.0))
    v1, v2 = (torch.from_numpy(v).float() / 255 for v in builder.views(0))
    torch.manual_seed(0)
    model = simclr()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses, accs = [], []
    for _ in range(30):
        out = model([v1, v2])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        accs.append(float(out["accuracy"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert np.mean(accs[-5:]) > np.mean(accs[:5]) and accs[-1] >= 0.9, accs


# ---------------------------------------------------------------- data-parallel: the global batch's gradient


# One rank of the data-parallel check, run as its own process (python -c): what a Ray Train worker does.
RANK_CODE = """
import sys, torch, torch.distributed as dist
from torch import nn
from fewray.algorithms.selfsup import SimCLR
rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
torch.manual_seed(0)
model = SimCLR(backbone=nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), head={"type": "NTXentLoss", "temperature": 0.5})
g = torch.Generator().manual_seed(1)
v1, v2 = torch.rand(6, 3, 2, 2, generator=g), torch.rand(6, 3, 2, 2, generator=g)
b = v1.shape[0] // world
ddp = nn.parallel.DistributedDataParallel(model)  # as ray.train.torch.prepare_model wraps it
result = ddp(mode="train", inputs=[v1[rank * b:(rank + 1) * b], v2[rank * b:(rank + 1) * b]])
result["loss"].backward()  # DDP averages the parameter gradients over the ranks
grads = {n: p.grad.clone() for n, p in model.named_parameters()}
if rank == 0:
    torch.save({"loss": result["loss"].detach(), "grads": grads, "scores": model(v1, mode="tensor")}, out)
dist.destroy_process_group()
"""


def test_gathered_loss_and_gradient_equal_one_process_on_the_global_batch(tmp_path):
    """Two gloo DDP processes with 3 images each give the loss and gradient of one process on all 6 images."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["2", str(tmp_path / "store"), str(tmp_path / "out.pt")]
    procs = [subprocess.Popen([sys.executable, "-c", RANK_CODE, str(r), *args], env=env, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    got = torch.load(tmp_path / "out.pt", weights_only=True)

    torch.manual_seed(0)
    model = SimCLR(backbone=nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), head={"type": "NTXentLoss",
                                                                                  "temperature": 0.5})
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.rand(6, 3, 2, 2, generator=g), torch.rand(6, 3, 2, 2, generator=g)
    out = model([v1, v2])
    out["loss"].backward()
    torch.testing.assert_close(got["scores"], model(v1, mode="tensor").detach())  # the same initial model
    torch.testing.assert_close(got["loss"], out["loss"].detach())
    for name, p in model.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, msg=name)


@pytest.mark.slow
def test_simclr_pretrains_with_two_ray_train_workers_and_meta_tests(omniglot_catalog, ray_local, tmp_path):
    """SimCLR through the runtime: the multi-view task streams two views per image to 2 DDP workers, the loss
    dict is summed, meta-validation runs prototypes on the backbone, and the checkpoint meta-tests as is."""
    from conftest import REPO

    from fewray.platform.config import load_config
    from fewray.platform.metatest import meta_test_checkpoint
    from fewray.platform.train import run_metatrain

    cfg = load_config(REPO / "configs" / "selfsup" / "simclr" / "conv4_omniglot.yaml", [
        f"data.root={omniglot_catalog}", "train.num_steps=6", "train.val_interval=3", "train.log_interval=3",
        "train.batch_size=16", "train.num_workers=2", "train.torch_threads=1", "val.num_tasks=20",
        "test.num_tasks=20"])
    result = run_metatrain(cfg, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert result["best_step"] in (3, 6) and 20.0 <= result["best_val_accuracy_mean"] <= 100.0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(result["tracking_uri"])
    assert [m.step for m in client.get_metric_history(result["mlflow_run_id"], "loss")] == [3, 6]
    assert client.get_metric_history(result["mlflow_run_id"], "batches_per_second")
    out = meta_test_checkpoint(cfg, result["best_checkpoint"], tracking_uri=result["tracking_uri"])
    assert out["num_tasks"] == 20 and 20.0 <= out["accuracy_mean"] <= 100.0
