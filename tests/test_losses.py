import numpy as np
import torch

from src.nst.losses import TV_SCALE, content_loss, gram_matrix, style_loss, tv_loss


def test_gram_matrix_matches_explicit_sum():
    features = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    f = features[0].reshape(4, 15).numpy().astype(np.float64)
    expected = np.array([[np.dot(f[i], f[j]) for j in range(4)] for i in range(4)]) / (4 * 15)
    np.testing.assert_allclose(gram_matrix(features)[0].numpy(), expected, rtol=1e-5)
    assert torch.allclose(gram_matrix(features), gram_matrix(features).transpose(1, 2))


def test_gram_matrix_is_size_invariant_for_tiled_features():
    features = torch.rand(1, 8, 6, 6)
    tiled = features.repeat(1, 1, 3, 2)
    torch.testing.assert_close(gram_matrix(features), gram_matrix(tiled))


def test_content_loss_formula():
    a, b = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 5)
    expected = ((a - b) ** 2).sum() / (4 * 5)  # sum over channels and positions / M
    torch.testing.assert_close(content_loss(a, b), expected)
    assert content_loss(a, a).item() == 0.0


def test_style_loss_formula_and_zero_for_identical_features():
    a, b = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 7, 2)
    ga, gb = gram_matrix(a), gram_matrix(b)
    expected = ((ga - gb) ** 2).sum() / (4 * 3**2)
    torch.testing.assert_close(style_loss(a, gb), expected)
    assert style_loss(a, ga).item() == 0.0
    assert style_loss(a, gb).item() > 0.0


def test_losses_do_not_depend_on_size_for_repeated_patterns():
    small_a, small_b = torch.rand(1, 4, 5, 5), torch.rand(1, 4, 5, 5)
    big_a, big_b = small_a.repeat(1, 1, 4, 4), small_b.repeat(1, 1, 4, 4)
    torch.testing.assert_close(content_loss(small_a, small_b), content_loss(big_a, big_b))
    torch.testing.assert_close(style_loss(small_a, gram_matrix(small_b)), style_loss(big_a, gram_matrix(big_b)))


def test_tv_loss():
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert tv_loss(flat).item() == 0.0
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1, vertical by 0
    torch.testing.assert_close(tv_loss(stripes), torch.tensor(1.0 * TV_SCALE))


# -- other style losses (style_loss=mean_cov | histogram) and masks -------------------------

import pytest  # noqa: E402

from src.nst.losses import (  # noqa: E402
    STYLE_LOSS_GAINS,
    STYLE_LOSSES,
    masked_gram_matrix,
    nuclear_norm,
    style_distance,
    style_target,
)


def test_nuclear_norm_value_and_gradient_match_the_svd():
    for shape in ((5, 9), (9, 5), (6, 6)):
        matrix = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(shape)))
        ours = matrix.clone().requires_grad_(True)
        reference = matrix.clone().requires_grad_(True)
        nuclear_norm(ours).backward()
        torch.linalg.matrix_norm(reference, "nuc").backward()
        torch.testing.assert_close(nuclear_norm(matrix), torch.linalg.svdvals(matrix).sum())
        torch.testing.assert_close(ours.grad, reference.grad)


def one_channel(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_mean_cov_is_the_gaussian_w2_distance_in_one_dimension():
    style, generated = one_channel([1.0, 3.0, 5.0, 7.0]), one_channel([0.0, 0.0, 2.0, 2.0, 1.0, 1.0])
    target = style_target("mean_cov", style)
    # 1-D Gaussians: W2^2 = (mu1 - mu2)^2 + (sigma1 - sigma2)^2 (population standard deviations)
    expected = (4.0 - 1.0) ** 2 + (5.0**0.5 - (2 / 3) ** 0.5) ** 2
    torch.testing.assert_close(style_distance("mean_cov", generated, target) / target["scale"], torch.tensor(expected))


def test_histogram_is_the_squared_distance_of_sorted_values():
    style, generated = one_channel([4.0, 1.0, 3.0, 2.0]), one_channel([0.0, 10.0, 5.0, 1.0])
    target = style_target("histogram", style)
    expected = ((0 - 1) ** 2 + (1 - 2) ** 2 + (5 - 3) ** 2 + (10 - 4) ** 2) / 4
    torch.testing.assert_close(style_distance("histogram", generated, target) / target["scale"], torch.tensor(expected))


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_every_style_loss_is_zero_for_the_style_itself_and_falls_under_gradient_descent(kind):
    generator = torch.Generator().manual_seed(0)
    style = torch.rand(1, 8, 6, 7, generator=generator) * 3
    target = style_target(kind, style)
    assert style_distance(kind, style, target).item() <= 1e-6 * style_distance(kind, style * 0.5, target).item()
    features = torch.rand(1, 8, 5, 5, generator=generator).requires_grad_(True)  # another size than the style
    optimiser = torch.optim.Adam([features], lr=0.05)
    values = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = style_distance(kind, features, target)
        values.append(loss.item())
        loss.backward()
        optimiser.step()
    assert values[0] > 0 and values[-1] < 0.2 * values[0]


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_style_losses_agree_for_a_small_rescaling_of_the_style(kind):
    """The normalisation: F = (1 + e) S gives gain * e^2 ||A||_F^2 / N^2 for every loss (first order)."""
    style = torch.rand(1, 16, 9, 9, generator=torch.Generator().manual_seed(1)) * 5
    target = style_target(kind, style)
    e = 1e-3
    expected = STYLE_LOSS_GAINS[kind] * e**2 * gram_matrix(style).pow(2).sum() / 16**2
    torch.testing.assert_close(style_distance(kind, style * (1 + e), target), expected, rtol=2e-2, atol=0)


@pytest.mark.parametrize("kind", STYLE_LOSSES)
def test_masked_style_losses_only_see_the_masked_positions(kind):
    generator = torch.Generator().manual_seed(2)
    style = torch.rand(1, 6, 8, 8, generator=generator)
    target = style_target(kind, style)
    features = torch.rand(1, 6, 8, 8, generator=generator)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :4] = 1.0
    scrambled = features.clone()
    scrambled[..., 4:] = torch.rand(1, 6, 8, 4, generator=generator) * 100  # outside the mask
    masked = style_distance(kind, features, target, mask)
    torch.testing.assert_close(style_distance(kind, scrambled, target, mask), masked)
    torch.testing.assert_close(
        masked, style_distance(kind, features[..., :4].contiguous(), target), rtol=1e-4, atol=1e-6
    )
    torch.testing.assert_close(masked_gram_matrix(features, torch.ones(1, 1, 8, 8)), gram_matrix(features))
