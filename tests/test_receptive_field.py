"""Receptive fields of VGG19's layers: against hand arithmetic, and against autograd."""

from fractions import Fraction

import pytest
import torch
from torch import nn

from src.backbone.receptive_field import (
    backbone_receptive_fields,
    feature_size,
    receptive_field,
)
from src.backbone.vgg import LAYER_NAMES, VGG19Features
from src.common.errors import UserError

# Worked out by hand, layer by layer. A 3x3 conv (stride 1, pad 1) adds 2 * stride to the
# size; a 2x2 pool (stride 2) adds 1 * stride and then doubles the stride; ReLUs change
# nothing. The centre of unit 0 moves by +stride/2 at each pool (pads 1 cancel the convs).
#   block 1 (stride 1): conv1_1 1+2=3, conv1_2 3+2=5, pool1 5+1=6 -> stride 2, start 0.5
#   block 2 (stride 2): conv2_1 6+4=10, conv2_2 14, pool2 14+2=16 -> stride 4, start 1.5
#   block 3 (stride 4): conv3_1 16+8=24, 32, 40, conv3_4 48, pool3 48+4=52 -> stride 8, start 3.5
#   block 4 (stride 8): conv4_1 52+16=68, 84, 100, conv4_4 116, pool4 116+8=124 -> stride 16, start 7.5
#   block 5 (stride 16): conv5_1 124+32=156, 188, 220, conv5_4 252, pool5 252+16=268 -> stride 32, start 15.5
# (The "relu4_1 rf 60, relu5_1 rf 140" would hold for a net with 3 convs in block 3;
# VGG19 has 4, which is where the extra 8 and 16 px come from.)
HAND = {
    "conv1_1": (3, 1, 0),
    "conv1_2": (5, 1, 0),
    "pool1": (6, 2, 0.5),
    "conv2_1": (10, 2, 0.5),
    "conv2_2": (14, 2, 0.5),
    "pool2": (16, 4, 1.5),
    "conv3_1": (24, 4, 1.5),
    "conv3_2": (32, 4, 1.5),
    "conv3_3": (40, 4, 1.5),
    "conv3_4": (48, 4, 1.5),
    "pool3": (52, 8, 3.5),
    "conv4_1": (68, 8, 3.5),
    "conv4_2": (84, 8, 3.5),
    "conv4_3": (100, 8, 3.5),
    "conv4_4": (116, 8, 3.5),
    "pool4": (124, 16, 7.5),
    "conv5_1": (156, 16, 7.5),
    "conv5_2": (188, 16, 7.5),
    "conv5_3": (220, 16, 7.5),
    "conv5_4": (252, 16, 7.5),
    "pool5": (268, 32, 15.5),
}


def expected(layer):
    """ReLUs share their conv's field."""
    return HAND[layer.replace("relu", "conv")]


def test_every_vgg19_layer_matches_hand_computation():
    fields = backbone_receptive_fields()
    assert list(fields) == LAYER_NAMES
    for layer in LAYER_NAMES:
        size, stride, start = expected(layer)
        field = fields[layer]
        assert (field.size, field.stride, field.start) == (size, stride, Fraction(start)), layer


def test_default_layers():
    sizes = {
        name: (receptive_field(name).size, receptive_field(name).stride)
        for name in ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    }
    assert sizes == {
        "relu1_1": (3, 1),
        "relu2_1": (10, 2),
        "relu3_1": (24, 4),
        "relu4_1": (68, 8),
        "relu5_1": (156, 16),
    }


def test_boxes_and_clipping():
    field = receptive_field("relu2_1")  # size 10, stride 2, centre of unit i at 0.5 + 2i
    assert field.box(0, 0) == (-4, -4, 6, 6)
    assert field.box(3, 5) == (10 - 4, 6 - 4, 10 + 6, 6 + 6)
    assert field.clipped_box(0, 0, width=32, height=32) == (0, 0, 6, 6)
    assert field.clipped_box(15, 15, width=32, height=32) == (26, 26, 32, 32)
    with pytest.raises(UserError, match="relu9_1"):
        receptive_field("relu9_1")


@pytest.mark.parametrize("size", [32, 37, 64, 100])
def test_feature_sizes_match_the_network(size):
    model = VGG19Features(nn.Identity(), last_layer="relu4_1")
    outputs = model(torch.zeros(1, 3, size, size + 3), ["relu1_1", "pool1", "relu2_1", "relu3_1", "relu4_1"])
    for name, tensor in outputs.items():
        assert tensor.shape[-2:] == (feature_size(size, name), feature_size(size + 3, name)), name


def positive_network(last_layer):
    """VGG19 geometry with avg pooling and positive weights: every path carries gradient."""
    torch.manual_seed(0)
    model = VGG19Features(nn.Identity(), last_layer=last_layer, pooling="avg")
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.constant_(layer.weight, 1.0 / (9 * layer.in_channels))
            nn.init.constant_(layer.bias, 0.0)
    return model.eval()


@pytest.mark.parametrize(
    "layer, image",
    [("relu1_1", 12), ("pool1", 16), ("relu2_1", 24), ("relu3_1", 48), ("relu4_1", 96), ("relu5_1", 176)],
)
def test_field_is_exactly_where_the_gradient_reaches(layer, image):
    """The input pixels that influence a unit are exactly its (clipped) receptive field."""
    model = positive_network(layer)
    field = backbone_receptive_fields(model)[layer]
    n = feature_size(image, layer)
    positions = [(n // 2, n // 2), (0, 0), (n - 1, n // 3)]  # centre, corner, edge
    x = torch.ones(len(positions), 3, image, image, requires_grad=True)
    out = model(x, [layer])[layer]
    picked = sum(out[i, 5, y, xx] for i, (y, xx) in enumerate(positions))
    (gradient,) = torch.autograd.grad(picked, x)
    for i, (y, xx) in enumerate(positions):
        support = (gradient[i].abs().sum(0) > 0).nonzero()
        top, left = support.min(0).values.tolist()
        bottom, right = (support.max(0).values + 1).tolist()
        assert (left, top, right, bottom) == field.clipped_box(y, xx, image, image), (layer, y, xx)
        assert len(support) == (right - left) * (bottom - top)  # a full rectangle
    # The centre unit is not clipped: the whole field fits in the image.
    assert field.clipped_box(n // 2, n // 2, image, image) == field.box(n // 2, n // 2)
