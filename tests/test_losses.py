import numpy as np
import torch

from src.losses import content_loss, gram_matrix, style_loss, tv_loss


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
    expected = ((ga - gb) ** 2).sum() / (4 * 3 ** 2)
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
    torch.testing.assert_close(tv_loss(stripes), torch.tensor(1.0))
