"""Spatial control (Gatys et al. 2017): a mask per style restricts it to a region of the content.

A mask is an image file (white = the style applies, black = it does not; grey values weigh
positions in between; the file is resized to the output) or one of the shapes `top`,
`bottom`, `left`, `right`, optionally with the fraction of the image it covers:
`top:0.4` is the upper 40 %. At each style layer the mask is averaged down to the layer's
resolution and the style's Gram matrix (or other statistics) of the generated image is taken
over the positions it weighs ("guided Gram matrices"); the style image's statistics are those
of the whole style image.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from src.common.errors import UserError
from src.common.images import load_image, resize

SHAPES = ("top", "bottom", "left", "right")
SHAPE_PATTERN = re.compile(r"^(top|bottom|left|right)(?::([0-9.]+))?$")


def is_shape(spec: str) -> bool:
    return bool(SHAPE_PATTERN.match(str(spec).strip()))


def check_shape(spec: str, key: str) -> None:
    match = SHAPE_PATTERN.match(str(spec).strip())
    if match and match.group(2) is not None:
        try:
            fraction = float(match.group(2))
        except ValueError:
            fraction = -1.0
        if not 0.0 < fraction <= 1.0:
            raise UserError(f"{key}={spec!r}: the fraction after ':' must be in (0, 1]")


def shape_mask(spec: str, height: int, width: int) -> torch.Tensor:
    """A (1, 1, H, W) mask of 0s and 1s for `top`, `bottom:0.3`, ..."""
    match = SHAPE_PATTERN.match(str(spec).strip())
    if not match:
        raise ValueError(f"not a mask shape: {spec!r}")
    side, fraction = match.group(1), float(match.group(2) or 0.5)
    mask = torch.zeros(1, 1, height, width)
    rows, cols = round(height * fraction), round(width * fraction)
    if side == "top":
        mask[..., :rows, :] = 1.0
    elif side == "bottom":
        mask[..., height - rows :, :] = 1.0
    elif side == "left":
        mask[..., :, :cols] = 1.0
    else:
        mask[..., :, width - cols :] = 1.0
    return mask


def load_mask_image(path, role: str) -> Image.Image:
    return load_image(path, role=role).convert("L")


def mask_tensor(source: str | Image.Image, height: int, width: int) -> torch.Tensor:
    """A mask (a shape name or a loaded greyscale image) at (height, width), values in [0, 1]."""
    if isinstance(source, str):
        return shape_mask(source, height, width)
    array = np.asarray(resize(source, (width, height)), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None, None].contiguous()


def layer_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The mask averaged down (area) to a layer's (height, width)."""
    if mask.shape[-2:] == (height, width):
        return mask
    return F.interpolate(mask, size=(height, width), mode="area")
