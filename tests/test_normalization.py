"""`normalization=relative|gatys` (docs/style_weights.md): every term over its target's magnitude,
so that a layer's weight is its real share and beta means the same for every painting."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir

from src.nst.losses import (
    RELATIVE_STYLE_UNIT,
    STYLE_LOSSES,
    content_loss,
    content_norm,
    gram_matrix,
    style_distance,
    style_norm,
    style_target,
    tv_loss,
    tv_norm,
)

FAST = ["logger=none", "device=cpu", "checkpoint_every=0", "device.compute_dtype=float32"]
# Shallow layers only (the backbone is cut after relu3_1): the properties do not depend on depth.
SHALLOW = ["layers=fine", "~layers.content.relu4_2", "+layers.content.relu3_1=1.0"]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, *overrides])


@pytest.fixture(scope="module")
def backbone():
    from src.backbone.vgg import build_backbone

    return build_backbone(last_layer="relu3_1", compute_dtype="float32")


def module(backbone, *overrides: str):
    from src.transfer.build import build_module

    transfer = build_module(config("size=48", *SHALLOW, *overrides), backbone=backbone)
    transfer.compute_targets()
    return transfer


def test_relative_terms_are_the_relative_distances():
    generator = torch.Generator().manual_seed(0)
    features, style, content = (torch.rand(1, 8, 6, 5, generator=generator) * scale for scale in (1.0, 4.0, 2.0))
    target = style_target("gram", style)
    gram, reference = gram_matrix(features), gram_matrix(style)
    relative = (gram - reference).pow(2).sum() / reference.pow(2).sum()
    torch.testing.assert_close(
        style_norm("relative", target) * style_distance("gram", features, target), RELATIVE_STYLE_UNIT * relative
    )
    torch.testing.assert_close(
        content_norm("relative", content) * content_loss(features, content),
        (features - content).pow(2).sum() / content.pow(2).sum(),
    )
    image, photo = torch.rand(1, 3, 9, 9, generator=generator), torch.rand(1, 3, 9, 9, generator=generator)
    torch.testing.assert_close(tv_norm("relative", photo) * tv_loss(image), tv_loss(image) / tv_loss(photo))
    assert tv_norm("relative", photo) * tv_loss(photo).item() == pytest.approx(1.0)
    assert style_norm("gatys", target) == content_norm("gatys", content) == tv_norm("gatys", photo) == 1.0


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_relative_style_terms_do_not_depend_on_the_magnitude_of_the_painting(kind):
    """A painting whose activations are c times larger (Gram matrices c^2, the Gram loss c^4)
    gives the same relative term for the image whose activations are c times larger too:
    the same beta, the same strength. The raw (gatys) term grows by c^4."""
    generator = torch.Generator().manual_seed(1)
    style, features = torch.rand(1, 8, 7, 6, generator=generator), torch.rand(1, 8, 5, 5, generator=generator)
    c = 7.0
    small, large = style_target(kind, style), style_target(kind, style * c)
    relative_small = style_norm("relative", small) * style_distance(kind, features, small)
    relative_large = style_norm("relative", large) * style_distance(kind, features * c, large)
    torch.testing.assert_close(relative_large, relative_small, rtol=1e-4, atol=0)
    raw_ratio = style_distance(kind, features * c, large) / style_distance(kind, features, small)
    assert raw_ratio.item() == pytest.approx(c**4, rel=1e-3)


@pytest.mark.parametrize("kind", ["mean_cov", "histogram"])
def test_mean_cov_and_histogram_are_relative_to_their_own_zero_distance(kind):
    """Divided by the Gram loss's d(0, A), they are 4 * gain * d(F, S) / d(0, S) in their own
    units: their distance from the zero activation is E_S = mean_p ||S_p||^2 = N tr(A)."""
    from src.nst.losses import STYLE_LOSS_GAINS

    generator = torch.Generator().manual_seed(2)
    style, features = torch.rand(1, 6, 5, 5, generator=generator) * 3, torch.rand(1, 6, 4, 4, generator=generator)
    target = style_target(kind, style)
    relative = style_norm("relative", target) * style_distance(kind, features, target) / RELATIVE_STYLE_UNIT
    own = style_distance(kind, features, target) / style_distance(kind, torch.zeros_like(features), target)
    torch.testing.assert_close(relative, 4 * STYLE_LOSS_GAINS[kind] * own, rtol=1e-4, atol=0)


def test_a_layers_weight_is_its_share_of_the_style_term(backbone):
    """Under relative, each layer's logged term is beta * unit * w_l * ||G - A||^2 / ||A||^2,
    and (at the photograph) the term that a weight of 1 gives each layer is of order 1 for
    every layer: the shallow layers are not orders of magnitude below the deep ones, as they
    are under gatys."""
    transfer = module(backbone, "beta=1e4")
    terms = transfer.evaluate()
    features = transfer.backbone(transfer.content_image, list(transfer.style_layers))
    for name, weight in transfer.style_layers.items():
        gram, reference = gram_matrix(features[name]), transfer.style_targets[name]
        relative = ((gram - reference).pow(2).sum() / reference.pow(2).sum()).item()
        assert terms[f"loss/style/{name}"] == pytest.approx(1e4 * RELATIVE_STYLE_UNIT * weight * relative, rel=1e-4)
    relative_per_weight = [terms[f"loss/style/{n}"] / w for n, w in transfer.style_layers.items()]
    assert max(relative_per_weight) < 20 * min(relative_per_weight), relative_per_weight
    raw = module(backbone, "beta=1e4", "normalization=gatys").evaluate()
    raw_per_weight = [raw[f"loss/style/{n}"] / w for n, w in transfer.style_layers.items()]
    assert max(raw_per_weight) > 50 * min(raw_per_weight), raw_per_weight


def test_blends_are_normalised_per_style_image_and_tv_by_the_photograph(backbone):
    """A 50/50 blend of two paintings: each style's term is its share of beta times its own
    relative distance (half its term alone), whatever the magnitude of its activations; TV at
    the photograph is tv_weight."""
    blend = ["style.weight=1", "style.blend=[{path:shipwreck,weight:1}]"]
    blended = module(backbone, *blend, "tv_weight=2").evaluate()
    alone = {name: module(backbone, f"style={name}").evaluate()["loss/style"] for name in ("starry_night", "shipwreck")}
    assert blended["loss/blend/starry_night"] == pytest.approx(0.5 * alone["starry_night"], rel=1e-4)
    assert blended["loss/blend/shipwreck"] == pytest.approx(0.5 * alone["shipwreck"], rel=1e-4)
    assert blended["loss/tv"] == pytest.approx(2.0, rel=1e-5)  # the image starts as the photograph


def test_gatys_keeps_the_raw_terms(backbone):
    relative, raw = module(backbone), module(backbone, "normalization=gatys")
    assert all(value == 1.0 for value in raw.content_norms.values())
    assert all(value == 1.0 for norms in raw.style_norm_sets for value in norms.values()) and raw.tv_norm == 1.0
    image = torch.rand_like(raw.content_image)
    raw_terms, relative_terms = raw.evaluate_image(image), relative.evaluate_image(image)
    for name in raw.style_layers:
        factor = relative.style_norm_sets[0][name]
        assert relative_terms[f"loss/style/{name}"] == pytest.approx(factor * raw_terms[f"loss/style/{name}"], rel=1e-5)


def test_unknown_normalization_is_named():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="normalization"):
        config("normalization=unit")
