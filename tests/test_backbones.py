"""Backbone output shapes (ResNet12, WRN-28-10, Conv4 variants) and DropBlock."""

import pytest
import torch

from fewray.algorithms import BACKBONES
from fewray.algorithms.backbones import DropBlock

torch.set_num_threads(1)


def test_resnet12_shapes():
    net = BACKBONES.build({"type": "ResNet12"}).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 84, 84)).shape == (2, 640)
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 640)
        fmap = BACKBONES.build({"type": "ResNet12", "with_avgpool": False, "flatten": False}).eval()
        assert fmap(torch.zeros(1, 3, 84, 84)).shape == (1, 640, 5, 5)
        one = BACKBONES.build({"type": "ResNet12", "in_channels": 1, "channels": [8, 8, 8, 8]})
        assert one(torch.zeros(2, 1, 28, 28)).shape == (2, 8)
    with pytest.raises(ValueError, match="4 stages"):
        BACKBONES.build({"type": "ResNet12", "channels": [64, 160, 320]})


def test_resnet12_dropblock_trains_and_is_identity_in_eval():
    torch.manual_seed(0)
    net = BACKBONES.build({"type": "ResNet12", "drop_rate": 0.1, "drop_block_warmup": 0,
                           "channels": [8, 8, 16, 16]})
    x = torch.rand(2, 3, 32, 32)
    out = net.train()(x)
    out.sum().backward()
    assert out.shape == (2, 16) and torch.isfinite(out).all()
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x))


def test_wrn_28_10_shape():
    torch.manual_seed(0)
    net = BACKBONES.build({"type": "WRN28x10"}).eval()
    assert sum(p.numel() for p in net.parameters()) > 36e6  # the 36.5M-parameter WRN-28-10
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 640)
    small = BACKBONES.build({"type": "WideResNet", "depth": 10, "widen_factor": 2, "with_avgpool": False,
                             "flatten": False}).eval()
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 128, 8, 8)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        BACKBONES.build({"type": "WideResNet", "depth": 27})


def test_conv4_variants_keep_state_dict_keys():
    conv4 = BACKBONES.build({"type": "Conv4", "in_channels": 1})
    nopool = BACKBONES.build({"type": "Conv4NoPool", "in_channels": 1})
    assert list(conv4.state_dict()) == list(nopool.state_dict())  # same layout as old checkpoints
    assert "layers.0.0.weight" in conv4.state_dict()
    assert nopool(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 5, 5)
    assert BACKBONES.build({"type": "Conv4NoPool"})(torch.zeros(1, 3, 84, 84)).shape == (1, 64, 19, 19)
    custom = BACKBONES.build({"type": "ConvNet", "in_channels": 1, "channels": [32, 32],
                              "pooling_blocks": [0], "padding_blocks": [], "flatten": False})
    assert custom(torch.zeros(1, 1, 28, 28)).shape == (1, 32, 11, 11)


def test_dropblock_drops_whole_blocks_and_rescales():
    torch.manual_seed(0)
    drop = DropBlock(block_size=3).train()
    x = torch.ones(4, 8, 10, 10)
    out = drop(x, gamma=0.05)
    zero = out == 0
    assert zero.any() and (~zero).any()
    kept = out[~zero]
    torch.testing.assert_close(kept, torch.full_like(kept, out.numel() / (~zero).sum().item()))
    # the dropped pixels are exactly a union of full 3x3 squares
    z = zero.float().view(-1, 1, 10, 10)
    full_squares = (torch.nn.functional.avg_pool2d(z, 3, stride=1) == 1).float()
    union = torch.nn.functional.conv_transpose2d(full_squares, torch.ones(1, 1, 3, 3)).clamp_max(1)
    assert torch.equal(union, z)
    assert torch.equal(drop.eval()(x, gamma=0.5), x)
    with pytest.raises(ValueError):
        DropBlock(block_size=0)
