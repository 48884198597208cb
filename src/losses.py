"""The terms of the style-transfer cost (Gatys et al. 2015), normalised per position so
that their values do not depend on the image size: the same alpha/beta give the same
balance at 128 px and at 1024 px. For a layer with N channels and M = H*W positions,
F its activations (N x M) for the generated image, P for the content image:

    J_content = sum_l w_l * 1/M * sum_{i,p} (F_ip - P_ip)^2
    J_style   = sum_l w_l * 1/(4 N^2) * sum_{i,j} (G_ij - A_ij)^2,   G = F F^T / (N M)
    J_tv      = mean_{y,x} (x[y+1,x] - x[y,x])^2 + mean_{y,x} (x[y,x+1] - x[y,x])^2

A is the Gram matrix of the style image's activations. Gatys' E_l has the same 1/4 and
1/N^2; dividing the content sum by M (Gatys: 1/2, no M) is what makes it size-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C): channel correlations averaged over positions and channels."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return torch.bmm(flat, flat.transpose(1, 2)) / (channels * height * width)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels, averaged over positions (and batch)."""
    return F.mse_loss(features, target) * features.shape[1]


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """1/(4 N^2) * squared Frobenius distance of the Gram matrices (averaged over batch)."""
    return 0.25 * F.mse_loss(gram_matrix(features), target_gram)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation (squared differences of neighbouring pixels), a smoothness prior."""
    vertical = (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
    horizontal = (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean()
    return vertical + horizontal
