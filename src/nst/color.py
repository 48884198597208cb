"""Colour control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer").

* `color=luminance`: style transfer on the luminance channel only. The network sees grey
  images (Y of YIQ, repeated on the three channels); the style's luminance is first shifted
  and scaled to the content's mean and standard deviation; the output keeps the content's
  chroma (I and Q of YIQ) exactly, up to clamping to [0, 1].
* `color=match`: the style image is recoloured before the transfer, by the affine map
  x -> A (x - mu_s) + mu_c with A = C_c^1/2 C_s^-1/2 (symmetric square roots; the "image
  analogies" variant of the paper), so that its RGB mean and covariance are the content's.

Images are (1, 3, H, W) RGB tensors in [0, 1].
"""

from __future__ import annotations

import functools

import torch

# NTSC YIQ (FCC 1953 coefficients), the space Gatys et al. 2017 use.
RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)
LUMA_WEIGHTS = RGB_TO_YIQ[0].view(1, 3, 1, 1)


@functools.cache
def _placed(constant: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A constant on the image's device and dtype, copied there once: a copy to a GPU at every
    step would make the CPU wait for it."""
    return constant.to(device=device, dtype=dtype)


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _placed(matrix, image.dtype, image.device), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply(RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Y of YIQ, (B, 1, H, W)."""
    return (image * _placed(LUMA_WEIGHTS, image.dtype, image.device)).sum(1, keepdim=True)


def grey(image: torch.Tensor) -> torch.Tensor:
    """The luminance repeated on the three channels: what the network sees with color=luminance."""
    return luminance(image).expand(-1, 3, -1, -1)


def chroma(image: torch.Tensor) -> torch.Tensor:
    """I and Q of YIQ, (B, 2, H, W)."""
    return rgb_to_yiq(image)[:, 1:]


def with_chroma(image: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The luminance of `image` with the chroma of `source` (same size), clamped to [0, 1]."""
    yiq = torch.cat([luminance(image), chroma(source)], dim=1)
    return yiq_to_rgb(yiq).clamp(0.0, 1.0)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's luminance, shifted and scaled to the content's mean and standard deviation,
    as a grey RGB image (Gatys et al. 2017, eq. 1)."""
    style_y, content_y = luminance(style), luminance(content)
    scaled = (style_y - style_y.mean()) * (content_y.std() / style_y.std().clamp_min(1e-6)) + content_y.mean()
    return scaled.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


def color_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3,) and covariance (3, 3) of an image's RGB pixels, in float64."""
    pixels = image.double().reshape(image.shape[0], 3, -1).permute(1, 0, 2).reshape(3, -1)
    mean = pixels.mean(1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / pixels.shape[1]


def _sqrtm(matrix: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    values = values.clamp_min(1e-10)
    return (vectors * (values.rsqrt() if inverse else values.sqrt())) @ vectors.T


def match_color(style: torch.Tensor, content: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """The style image recoloured so that its RGB mean and covariance are the content's."""
    style_mean, style_cov = color_stats(style)
    content_mean, content_cov = color_stats(content)
    # A tiny ridge keeps a flat (e.g. greyscale) style from amplifying noise without bound.
    ridge = 1e-8 * torch.eye(3, dtype=torch.float64, device=style.device)
    transform = _sqrtm(content_cov) @ _sqrtm(style_cov + ridge, inverse=True)
    pixels = style.double().reshape(style.shape[0], 3, -1)
    recoloured = torch.einsum("ij,bjp->bip", transform, pixels - style_mean.view(1, 3, 1)) + content_mean.view(1, 3, 1)
    recoloured = recoloured.reshape(style.shape).to(style.dtype)
    return recoloured.clamp(0.0, 1.0) if clamp else recoloured
