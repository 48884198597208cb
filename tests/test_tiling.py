"""Tiled evaluation (src/nst/tiling.py): the loss and its gradient computed tile by tile equal
the whole-image ones, for each tileable style loss, with masks, blends and colour modes, tiles
of several sizes and image sides that are multiples of nothing. Small images, float32."""

from __future__ import annotations

import pytest
import torch

from src.backbone.vgg import build_backbone
from src.common.errors import UserError
from src.nst.masks import shape_mask
from src.nst.tiling import TiledObjective, plan_tiles
from src.transfer.module import Style, StyleTransfer

SHALLOW = {"content": {"relu2_1": 1.0}, "style": {"relu1_1": 0.3, "relu2_1": 0.3, "relu3_1": 0.4}}
GATYS = {
    "content": {"relu4_2": 1.0},
    "style": {"relu1_1": 0.2, "relu2_1": 0.2, "relu3_1": 0.2, "relu4_1": 0.2, "relu5_1": 0.2},
}


@pytest.fixture(scope="module")
def backbone():
    """Average pooling: with max pooling, the crop's float rounding can break a near-tie in a
    pooling window the other way than the whole image's, moving that pixel's gradient to its
    neighbour (test_max_pooling_...). Averages have no ties: the gradient is compared per pixel."""
    return build_backbone(last_layer="relu5_1", pooling="avg")


@pytest.fixture(scope="module")
def max_backbone():
    return build_backbone(last_layer="relu5_1")


def image(height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth random picture (noise is a poor stand-in for a photograph's statistics)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8 + 2, width // 8 + 2, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (smooth + 0.05 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


def make_module(
    backbone, layers, height=77, width=101, style_loss="gram", color="none", styles=None, tv_weight=0.0
) -> StyleTransfer:
    return StyleTransfer(
        backbone=backbone,
        content_image=image(height, width, 1),
        style_image=image(90, 70, 2),
        init_image=image(height, width, 3),
        content_layers=layers["content"],
        style_layers=layers["style"],
        alpha=1.0,
        beta=1e4,
        tv_weight=tv_weight,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        styles=styles,
        style_loss=style_loss,
        color=color,
    )


def whole(module: StyleTransfer) -> tuple[dict[str, float], torch.Tensor]:
    module.compute_targets()
    pixels = module.image.detach().clone().requires_grad_(True)
    terms = module.losses(pixels)
    (gradient,) = torch.autograd.grad(terms["loss/total"], pixels)
    return {key: value.item() for key, value in terms.items()}, gradient


def tiled(module: StyleTransfer, tile_size: int) -> tuple[dict[str, float], torch.Tensor]:
    objective = TiledObjective(module, tile_size)
    module.content_targets = {}
    objective.compute_targets()
    terms, gradient = objective.terms_and_gradient(module.image)
    values = {key: value.item() for key, value in terms.items()}
    for key, value in objective.terms(module.image).items():  # the pass without gradients agrees
        assert value.item() == pytest.approx(values[key], rel=1e-6, abs=1e-9)
    return values, gradient


def assert_same(module: StyleTransfer, tile_size: int, rtol: float = 2e-4, per_pixel: bool = True) -> None:
    expected_terms, expected_gradient = whole(module)
    terms, gradient = tiled(module, tile_size)
    assert terms.keys() == expected_terms.keys()
    for key, value in expected_terms.items():
        assert terms[key] == pytest.approx(value, rel=rtol, abs=1e-6 * abs(expected_terms["loss/total"])), key
    scale = expected_gradient.abs().max()
    assert scale > 0
    assert ((gradient - expected_gradient).norm() / expected_gradient.norm()).item() < 10 * rtol
    if per_pixel:
        torch.testing.assert_close(gradient, expected_gradient, rtol=0, atol=rtol * scale)


def test_tiles_keep_every_position_of_every_layer_once(backbone):
    for height, width, tile in ((77, 101, 16), (160, 133, 48), (50, 50, 1000)):
        tiles = plan_tiles(height, width, tile, backbone, list(GATYS["style"]))
        for name in GATYS["style"]:
            from src.backbone.receptive_field import feature_size

            count = torch.zeros(feature_size(height, name, backbone), feature_size(width, name, backbone))
            for t in tiles:
                rows, cols = t.kept_in_image(name)
                count[rows, cols] += 1
            assert (count == 1).all(), (height, width, tile, name)
        assert all(t.rows.start % 16 == 0 and t.cols.start % 16 == 0 for t in tiles)
    assert len(plan_tiles(77, 101, 16, backbone, list(GATYS["style"]))) > 4


def test_kept_activations_equal_the_whole_image_ones(max_backbone):
    backbone = max_backbone
    picture = image(83, 117, 5)
    layers = list(GATYS["style"])
    full = backbone(picture, layers)
    strides = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 4, "relu4_1": 8, "relu5_1": 16}
    for tile in plan_tiles(83, 117, 32, backbone, layers):
        features = backbone(tile.crop(picture), layers)
        for name in layers:
            if tile.keeps(name):
                kept = features[name][..., *tile.kept_in_crop(name, strides[name])]
                torch.testing.assert_close(kept, full[name][..., *tile.kept_in_image(name)], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("tile_size", [16, 40, 1000])
def test_gram_loss_and_gradient_equal_the_whole_image_ones(backbone, tile_size):
    assert_same(make_module(backbone, SHALLOW, tv_weight=10.0), tile_size)


@pytest.mark.parametrize("tile_size", [48])
def test_gatys_layers_odd_sides(backbone, tile_size):
    assert_same(make_module(backbone, GATYS, height=131, width=97), tile_size)


@pytest.mark.parametrize("tile_size", [24])
def test_mean_cov_loss_and_gradient_equal_the_whole_image_ones(backbone, tile_size):
    assert_same(make_module(backbone, SHALLOW, style_loss="mean_cov"), tile_size)


@pytest.mark.parametrize("style_loss", ["gram", "mean_cov"])
def test_masked_blend_equals_the_whole_image(backbone, style_loss):
    height, width = 75, 99
    styles = [
        Style(image(90, 70, 2), 0.6, shape_mask("left:0.6", height, width), "a"),
        Style(image(64, 80, 7), 0.3, None, "b"),
        Style(image(70, 70, 8), 0.1, shape_mask("bottom", height, width), "c"),
    ]
    module = make_module(backbone, SHALLOW, height=height, width=width, style_loss=style_loss, styles=styles)
    assert_same(module, 24)


@pytest.mark.parametrize("color", ["luminance", "match"])
def test_colour_modes_equal_the_whole_image(backbone, color):
    assert_same(make_module(backbone, SHALLOW, color=color), 24)


@pytest.mark.parametrize("style_loss", ["gram", "mean_cov"])
def test_max_pooling_gives_the_same_loss_and_gradient_up_to_ties(max_backbone, style_loss):
    assert_same(make_module(max_backbone, GATYS, height=97, width=131, style_loss=style_loss), 64, per_pixel=False)


def test_a_large_style_image_gives_the_whole_image_targets(backbone):
    module = make_module(backbone, GATYS, style_loss="mean_cov")
    module.style_image = image(150, 121, 9)
    module.compute_targets()
    expected = module.style_target_sets[0]
    targets = TiledObjective(module, 32).style_targets(module.style_image)
    for name, target in expected.items():
        for key, value in target.items():
            assert targets[name][key].dtype == value.dtype
            torch.testing.assert_close(targets[name][key], value, rtol=1e-4, atol=1e-5 * value.abs().max().item())


def test_histogram_loss_is_refused_in_tiles(backbone):
    with pytest.raises(UserError, match="histogram cannot be computed in tiles"):
        TiledObjective(make_module(backbone, SHALLOW, style_loss="histogram"), 32)


# -- when to tile (src/transfer/tiled.py) and tiled runs ---------------------------------------

LAYERS = ["relu4_2", *GATYS["style"]]


def shape(height, width, history=20):
    from src.transfer.tiled import RunShape

    return RunShape(height, width, LAYERS, ["relu4_2"], history, "float32")


def test_plan_is_untiled_when_it_fits_and_tiled_with_the_largest_tile_when_not():
    from src.transfer.tiled import plan_memory

    have = 22 * 2**30
    assert plan_memory(shape(1536, 2048), have).tile_size is None
    large = plan_memory(shape(3072, 4096), have)
    assert large.tile_size == 1536 and large.history_size == 20 and large.needed_bytes <= have
    huge = plan_memory(shape(6144, 8192), have)
    assert huge.tile_size >= 768 and huge.history_size < 20 and huge.needed_bytes <= have
    assert plan_memory(shape(6144, 8192), have, tile_size=0) is None
    assert plan_memory(shape(96, 128), have, tile_size=64).tile_size == 64
    # a smaller tile needs less
    assert shape(3072, 4096).tiled_bytes(5, 512) < shape(3072, 4096).tiled_bytes(5, 1536)


def test_refusal_names_a_size_that_fits():
    from src.transfer.tiled import plan_run

    with pytest.raises(UserError, match=r"size=8192 \(8192x6144 px\) needs about .* GiB untiled, .*; size=\d+ fits"):
        plan_run(shape(6144, 8192), "cpu", 8192, 0, [])
    with pytest.raises(UserError, match=r"in tiles of 256 px with an L-BFGS history of 3.*size=\d+ fits"):
        plan_run(shape(49152, 65536), "cpu", 65536, None, [])


def test_a_tiled_run_from_the_command_line(tmp_path):
    from conftest import read_metrics, run_cli

    result = run_cli(
        "size=96", "steps=4", "logger=none", "device=cpu", "tile_size=32", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["tiling"]["tile_size"] == 32 and metrics["tiling"]["tiles"] > 1
    assert metrics["final"]["total"] < metrics["initial"]["total"]
    refused = run_cli(
        "size=96",
        "steps=2",
        "logger=none",
        "device=cpu",
        "tile_size=32",
        "style_loss=histogram",
        f"hydra.run.dir={tmp_path / 'hist'}",
    )
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: style_loss=histogram")
    bad = run_cli("size=96", "tile_size=-3", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "tile_size=-3" in bad.stderr
