"""The terms of the style-transfer cost (Gatys et al. 2015), normalised per position so
that their values do not depend on the image size: the same alpha/beta give the same
balance at 128 px and at 1024 px. For a layer with N channels and M = H*W positions,
F its activations (N x M) for the generated image, P for the content image:

    J_content = sum_l w_l * 1/M * sum_{i,p} (F_ip - P_ip)^2
    J_style   = sum_l w_l * 1/(4 N^2) * sum_{i,j} (G_ij - A_ij)^2,   G = F F^T / (N M)
    J_tv      = 1000 * (mean_{y,x} (x[y+1,x] - x[y,x])^2 + mean_{y,x} (x[y,x+1] - x[y,x])^2)

A is the Gram matrix of the style image's activations. Gatys' E_l has the same 1/4 and
1/N^2; dividing the content sum by M (Gatys: 1/2, no M) is what makes it size-free.

`style_loss=mean_cov` and `style_loss=histogram` replace the Gram distance per layer by a
Gaussian Wasserstein-2 distance or per-channel histogram distances, scaled to the Gram
loss's range (see "other style losses" below and docs/controls.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


class _Gram(torch.autograd.Function):
    """F^T F * scale for F (B, M, N) (positions x channels), or F F^T for F (B, N, M).

    Autograd's backward of bmm(F, F^T) is two matmuls (one per operand); with the Gram
    matrix's symmetry it is one: dF = (dG + dG^T) F. That is a third less Gram arithmetic,
    5 % of a step at 512 px.

    F may be bfloat16 (a bf16 backbone's activations): the Gram matrix is then computed in
    float32 from the exact bf16 values (G - A needs every bit), but the backward runs in
    bf16, about 2.5x faster on a CPU with AVX512-BF16: its result is rounded to bf16 on its
    way into the backbone anyway, and only dG's rounding (relative 2^-9) is added to that.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor, scale: float, positions_major: bool) -> torch.Tensor:
        ctx.save_for_backward(flat)
        ctx.scale, ctx.positions_major = scale, positions_major
        wide = flat.to(torch.promote_types(flat.dtype, torch.float32))
        if positions_major:
            return torch.bmm(wide.transpose(1, 2), wide).mul_(scale)
        return torch.bmm(wide, wide.transpose(1, 2)).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (flat,) = ctx.saved_tensors
        symmetric = (grad + grad.transpose(1, 2)).mul_(ctx.scale).to(flat.dtype)
        if ctx.positions_major:
            return torch.bmm(flat, symmetric), None, None
        return torch.bmm(symmetric, flat), None, None


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C): channel correlations averaged over positions and channels,
    in float32 at least (bfloat16 features: see _Gram).

    Reads the activations in place whatever their layout: channels_last ones (the backbone's
    default) as a positions x channels matrix, others as channels x positions.
    """
    batch, channels, height, width = features.shape
    scale = 1.0 / (channels * height * width)
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        flat = features.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        return _Gram.apply(flat, scale, True)
    return _Gram.apply(features.reshape(batch, channels, height * width), scale, False)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels, averaged over positions (and batch)."""
    return F.mse_loss(features, target) * features.shape[1]


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """1/(4 N^2) * squared Frobenius distance of the Gram matrices (averaged over batch);
    `features` in float32 or bfloat16."""
    return 0.25 * F.mse_loss(gram_matrix(features), target_gram)


# The TV term's unit: with the mean squared difference alone, tv_weight had to be about 1e9
# to smooth anything against the default beta=1e4 (at 1e6 it was 0.08 % of the loss and the
# image unchanged). Scaled by 1000, tv_weight=1e5 smooths lightly and 1e6 strongly (from
# noise at 96 px, 60 steps: mean |neighbour difference| 0.49 at 0, 0.32 at 1e5, 0.15 at 1e6).
TV_SCALE = 1000.0


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation (squared differences of neighbouring pixels, x TV_SCALE), a smoothness prior."""
    vertical = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
    horizontal = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean()
    return (vertical + horizontal) * TV_SCALE


# -- other style losses (`style_loss=gram|mean_cov|histogram`) -------------------------------
#
# A style target is computed once per style image and layer (`style_target`); the distance
# of the generated image's activations to it is `style_distance`. An optional `mask`
# ((1, 1, H, W) weights in [0, 1] at the layer's resolution) restricts the generated image's
# statistics to a region (Gatys et al. 2017, spatial control); the style image's statistics
# are always taken over the whole style image.
#
# mean_cov and histogram distances are quadratic in the activations, the Gram distance is
# quartic, so no constant puts them on one scale for every image. We multiply them by
#
#     s_l = gain * ||A||_F^2 / (N^2 * mean_p ||S_p||^2)          (A: the style's Gram matrix)
#
# Without the gain, all three losses are equal to first order for a small uniform rescaling
# of the style's own activations (F = (1 + e) S gives e^2 ||A||_F^2 / N^2 for each). Far from
# the style (at the content image) they then start within 1x-3.3x of the Gram loss on the
# sample pairs; but near their optimum the quadratic losses pull harder than the quartic
# Gram loss, so at equal beta they stylise more. The gains (0.2 for mean_cov, 0.5 for
# histogram) were measured so that beta=1e4 moves the default pair (Tubingen x Starry Night,
# 128 px, 50 L-BFGS steps) as far from the photograph (final content term) as the Gram loss
# does; docs/controls.md has the numbers.

STYLE_LOSS_GAINS = {"gram": 1.0, "mean_cov": 0.2, "histogram": 0.5}
STYLE_LOSSES = ("gram", "mean_cov", "histogram")


def masked_gram_matrix(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gram matrix of the positions weighted by `mask` (1, 1, H, W): F diag(m) F^T / (N sum m)."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    weights = mask.reshape(1, 1, height * width).to(features.dtype)
    return torch.bmm(flat * weights, flat.transpose(1, 2)) / (channels * weights.sum().clamp_min(1e-8))


def style_scale(features: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """s_l above without the gain: ||A||_F^2 / (N^2 * mean_p ||S_p||^2) for the style's activations."""
    channels = features.shape[1]
    energy = features.pow(2).sum(1).mean()
    return gram.pow(2).sum() / (channels**2 * energy.clamp_min(1e-12))


def _flat(features: torch.Tensor) -> torch.Tensor:
    if features.shape[0] != 1:
        raise ValueError("mean_cov and histogram style losses take one image at a time (batch of 1)")
    return features[0].reshape(features.shape[1], -1)


def _positions(mask: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor | None:
    """Normalised position weights (M,) from a mask, or None for uniform weights."""
    if mask is None:
        return None
    weights = mask.reshape(-1).to(features.dtype)
    return weights / weights.sum().clamp_min(1e-8)


def style_target(kind: str, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Everything `style_distance` needs about the style image's activations at one layer."""
    gram = gram_matrix(features).detach()
    if kind == "gram":
        return {"gram": gram}
    scale = STYLE_LOSS_GAINS[kind] * style_scale(features, gram).detach()
    flat = _flat(features).detach()
    if kind == "mean_cov":
        flat64 = flat.double()
        mean = flat64.mean(1)
        centred = flat64 - mean[:, None]
        cov = centred @ centred.T / flat.shape[1]
        with lapack_threads(cov):
            values, vectors = torch.linalg.eigh(cov)
        cov_sqrt = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
        return {"gram": gram, "mean": mean, "cov_sqrt": cov_sqrt, "trace": cov.trace(), "scale": scale}
    if kind == "histogram":
        return {"gram": gram, "sorted": flat.sort(dim=1).values, "scale": scale}
    raise ValueError(f"unknown style loss {kind!r}; choose one of {', '.join(STYLE_LOSSES)}")


@contextmanager
def lapack_threads(tensor: torch.Tensor) -> Iterator[None]:
    """One CPU thread for small eigendecompositions: MKL's threaded eigh on a busy 2-core
    machine took seconds for a 512 x 512 matrix instead of milliseconds."""
    threads = torch.get_num_threads()
    single = tensor.device.type == "cpu" and threads > 1
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(threads)


def nuclear_norm(matrix: torch.Tensor) -> torch.Tensor:
    """Sum of the singular values of a 2-D matrix, with a bounded gradient.

    ||Y||_* = max over ||W||_2 <= 1 of <W, Y>, attained at the polar factor W = (Y Y^T)^-1/2 Y;
    so <W.detach(), Y> has the right value and (envelope theorem) the right gradient. W comes
    from the eigendecomposition of the smaller of Y Y^T and Y^T Y, zero eigenvalues left out.
    """
    rows, cols = matrix.shape
    with torch.no_grad():
        small = matrix @ matrix.T if rows <= cols else matrix.T @ matrix
        with lapack_threads(small):
            values, vectors = torch.linalg.eigh(small)
        keep = values > values.max().clamp_min(0) * 1e-12
        inverse_sqrt = torch.where(
            keep, values.clamp_min(torch.finfo(values.dtype).tiny).rsqrt(), torch.zeros_like(values)
        )
        projector = (vectors * inverse_sqrt) @ vectors.T
        polar = projector @ matrix if rows <= cols else matrix @ projector
    return (polar * matrix).sum()


def gaussian_w2(
    features: torch.Tensor, target: dict[str, torch.Tensor], mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Squared Wasserstein-2 distance between Gaussians fitted to the activations and the style's.

    W2^2 = |mu - mu_s|^2 + tr(C) + tr(C_s) - 2 tr((C_s^1/2 C C_s^1/2)^1/2). With C = Y Y^T
    (Y the centred activations, columns weighted by sqrt(position weight)), the last trace is
    the nuclear norm of C_s^1/2 Y, whose gradient stays bounded when C is rank-deficient.
    (`nuclear_norm`). In float64: the terms cancel to zero for identical activations.
    """
    flat = _flat(features).double()
    weights = _positions(mask, flat)
    if weights is None:
        mean = flat.mean(1)
        centred = (flat - mean[:, None]) / flat.shape[1] ** 0.5
    else:
        mean = flat @ weights
        centred = (flat - mean[:, None]) * weights.sqrt()
    cross = nuclear_norm(target["cov_sqrt"] @ centred)
    distance = (mean - target["mean"]).pow(2).sum() + centred.pow(2).sum() + target["trace"] - 2 * cross
    return distance.clamp_min(0).to(features.dtype)


def quantiles(sorted_values: torch.Tensor, count: int) -> torch.Tensor:
    """`count` evenly spaced quantiles of each row of `sorted_values` (itself if it has `count`)."""
    if sorted_values.shape[1] == count:
        return sorted_values
    return F.interpolate(sorted_values[None], size=count, mode="linear", align_corners=False)[0]


def histogram_distance(
    features: torch.Tensor, target: dict[str, torch.Tensor], mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel histogram matching (Risser et al. 2017): sum over channels of the mean
    squared distance between the sorted activations and the style's quantiles (the exact
    squared 1-D Wasserstein-2 distance between each channel's distributions)."""
    flat = _flat(features)
    if mask is not None:
        flat = flat[:, mask.reshape(-1) > 0.5]
        if flat.shape[1] == 0:
            return features.new_zeros(())
    ordered = flat.sort(dim=1).values
    return (ordered - quantiles(target["sorted"], ordered.shape[1])).pow(2).sum(0).mean()


# -- the same distances from the activations' moments --------------------------------------
#
# The Gram and mean_cov distances depend on the activations only through sums over positions
# (sum of F_p F_p^T, sum of F_p, the positions' count or mask weight). Computed from those
# sums they can be evaluated, with their exact gradient, on an image too large to hold at
# once: src/nst/tiling.py sums the moments tile by tile.


def gram_distance(gram: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Gram loss of one layer from the generated image's Gram matrix."""
    return 0.25 * F.mse_loss(gram, target["gram"])


class _TraceSqrt(torch.autograd.Function):
    """tr((A C A)^1/2) for symmetric PSD A and C, with the gradient 1/2 A (A C A)^+1/2 A
    (the pseudo-inverse over the kept eigenvalues): what `nuclear_norm(A Y)` gives through
    Y for C = Y Y^T, so the two forms of the W2 distance have the same gradient."""

    @staticmethod
    def forward(ctx, root: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
        inner = root @ cov @ root
        inner = (inner + inner.T) / 2
        with lapack_threads(inner):
            values, vectors = torch.linalg.eigh(inner)
        keep = values > values.max().clamp_min(0) * 1e-12
        roots = torch.where(keep, values.clamp_min(0).sqrt(), torch.zeros_like(values))
        inverse = torch.where(keep, values.clamp_min(torch.finfo(values.dtype).tiny).rsqrt(), torch.zeros_like(values))
        ctx.save_for_backward(root @ (vectors * inverse) @ vectors.T @ root)
        return roots.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (kernel,) = ctx.saved_tensors
        return None, grad * 0.5 * kernel


def gaussian_w2_moments(mean: torch.Tensor, cov: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
    """`gaussian_w2` from the activations' (weighted) mean and covariance, in float64."""
    cross = _TraceSqrt.apply(target["cov_sqrt"], cov)
    distance = (mean - target["mean"]).pow(2).sum() + cov.trace() + target["trace"] - 2 * cross
    return distance.clamp_min(0).float()


def style_distance_from_moments(
    kind: str, moments: dict[str, torch.Tensor], channels: int, target: dict[str, torch.Tensor]
) -> torch.Tensor:
    """`style_distance` from moments over the positions, each weighted by its mask value
    (1 without a mask): `count` (sum of weights), `first` (sum of w_p F_p) and `second`
    (sum of w_p F_p F_p^T; float64 for mean_cov)."""
    count = moments["count"]
    if kind == "gram":
        gram = moments["second"] / (channels * count.clamp_min(1e-8))
        return gram_distance(gram.reshape(target["gram"].shape), target)
    if kind == "mean_cov":
        total = count.double().clamp_min(1e-8)
        mean = moments["first"] / total
        cov = moments["second"] / total - torch.outer(mean, mean)
        return target["scale"] * gaussian_w2_moments(mean, cov, target)
    raise ValueError(f"the {kind!r} style loss has no form in moments (only gram and mean_cov)")


def style_distance(
    kind: str, features: torch.Tensor, target: dict[str, torch.Tensor], mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The style loss of one layer: Gram (default), mean and covariance (W2), or histograms.
    `features` may be in the backbone's compute dtype: only the plain Gram loss uses it as is."""
    if kind == "gram" and mask is None:
        return style_loss(features, target["gram"])
    features = features.float()
    if kind == "gram":
        assert mask is not None  # the unmasked Gram loss returned above
        return gram_distance(masked_gram_matrix(features, mask), target)
    if kind == "mean_cov":
        return target["scale"] * gaussian_w2(features, target, mask)
    if kind == "histogram":
        return target["scale"] * histogram_distance(features, target, mask)
    raise ValueError(f"unknown style loss {kind!r}; choose one of {', '.join(STYLE_LOSSES)}")


# -- normalisation (`normalization=relative|gatys`) ----------------------------------------
#
# `relative` divides each term by its distance from an all-zero activation to its target,
# d(0, T), computed once when the targets are built (the distances themselves are unchanged):
#
#     content, per layer:  ||F - P||^2 / ||P||^2          (d(0, P) = mean_p ||P_p||^2)
#     style, per layer and style image:  ||G - A||^2 / ||A||^2   (d(0, A) = ||A||_F^2 / (4 N^2))
#     tv:  J_tv(x) / J_tv(content image)
#
# times RELATIVE_STYLE_UNIT for the style term. A layer's weight is then its real share of
# the style term, whatever the magnitude of its activations, and a given beta is about the
# same strength for every painting. mean_cov and histogram are divided by the Gram loss's
# d(0, A) too: their scale s_l (above) already maps them onto the Gram loss's range, so they
# become gain * 4 * W2^2(F, S) / W2^2(0, S), their own relative distance, with the measured
# cross-loss balance kept. `gatys` multiplies by 1: the raw terms of the formulas above.

# beta * RELATIVE_STYLE_UNIT multiplies the relative style distance. With it alpha=1
# beta=1e4 is a balanced result, 1e3 lighter and 1e5 stronger (docs/style_weights.md).
RELATIVE_STYLE_UNIT = 1e-3


def content_norm(normalization: str, target: torch.Tensor) -> float:
    """The factor of a content layer's term: 1 / d(0, P) (relative) or 1 (gatys)."""
    if normalization == "gatys":
        return 1.0
    return 1.0 / max(content_loss(torch.zeros_like(target), target).item(), 1e-12)


def style_norm(normalization: str, target: dict[str, torch.Tensor]) -> float:
    """The factor of a style layer's term for one style image: RELATIVE_STYLE_UNIT / d(0, A)
    of the Gram loss (relative), or 1 (gatys)."""
    if normalization == "gatys":
        return 1.0
    gram = target["gram"]
    magnitude = 0.25 * gram.double().pow(2).mean().item()  # ||A||^2 / (4 N^2): 0.25 * mse(0, A)
    return RELATIVE_STYLE_UNIT / max(magnitude, 1e-30)


def tv_norm(normalization: str, content_image: torch.Tensor) -> float:
    """The factor of the TV term: 1 / J_tv(content image) (relative), or 1 (gatys)."""
    if normalization == "gatys":
        return 1.0
    return 1.0 / max(tv_loss(content_image).item(), 1e-12)
