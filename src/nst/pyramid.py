"""Coarse to fine: optimise at increasing sizes, upsampling the result between levels.

`pyramid.levels=3 pyramid.factor=2` with `size=512` runs at 128, 256 and 512 px: the coarse
levels are cheap and settle the large-scale structure (the style layers' receptive fields
cover more of a small image), the finest level adds the detail. `steps` is the number of
steps at the finest level; `pyramid.steps` those of each coarser level (a number, or a list
from the coarsest; null: `steps` as well). Only the finest level is logged, snapshotted and
checkpointed like a single-scale run; metrics.json gets a `pyramid` entry per level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from src.common.errors import UserError


def level_sizes(size: int, levels: int, factor: float) -> list[int]:
    """Long sides from the coarsest to `size`: size / factor^(levels-1), ..., size / factor, size."""
    return [
        size if level == levels - 1 else max(1, round(size / factor ** (levels - 1 - level))) for level in range(levels)
    ]


def level_steps(steps: int, levels: int, coarse_steps: Any) -> list[int]:
    """Steps per level, coarsest first; the finest level runs `steps`."""
    if coarse_steps is None:
        return [steps] * levels
    if isinstance(coarse_steps, int):
        return [coarse_steps] * (levels - 1) + [steps]
    coarse = list(coarse_steps)
    if len(coarse) != levels - 1:
        raise UserError(
            f"pyramid.steps={coarse}: give one number per coarser level ({levels - 1}), or one number for all"
        )
    return [*coarse, steps]


def check_steps(value: Any, levels: int) -> None:
    """pyramid.steps: null, a positive integer, or a list of levels-1 positive integers."""
    if value is None:
        return
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        items = list(items)
    except TypeError:
        items = [value]
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        raise UserError(f"pyramid.steps={value}: must be null, a positive integer or a list of positive integers")
    if not isinstance(value, int) and len(items) != levels - 1:
        raise UserError(
            f"pyramid.steps={list(items)}: give one number per coarser level "
            f"({levels - 1} for pyramid.levels={levels}), or one number for all"
        )


def upsample(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A level's result at the next level's size (bicubic, clamped to [0, 1])."""
    if tuple(image.shape[-2:]) == (height, width):
        return image.clone()
    return F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def describe(sizes: Sequence[int], steps: Sequence[int]) -> str:
    return ", ".join(f"{size} px x {count} steps" for size, count in zip(sizes, steps))


# `pyramid=auto` (the default): single scale up to about 512 * sqrt(2) px; above, from about
# 512 px up in factors of 2, so that a large output keeps the stroke scale and composition
# of a 512 px run (the style layers' receptive fields are fixed in pixels). The coarsest
# level runs 2/3 of `steps`: it only has to settle the composition, which the finer levels
# continue. Each finer level has 4 times the pixels and runs a quarter of the steps of the
# one before, so the levels cost about the same, but at least AUTO_MIN_STEPS: the finest
# level is what is seen at 100 %. Measured at 2048 px against other splits of the same time
# and against single scale (docs/print_size.md).
AUTO_SINGLE_SCALE = 724
AUTO_COARSEST = 512
AUTO_COARSEST_SHARE = 2 / 3
AUTO_MIN_STEPS = 15


def auto_plan(size: int, steps: int) -> list[tuple[int, int]]:
    """(long side, steps) of each level of `pyramid=auto`, coarsest first."""
    if size <= AUTO_SINGLE_SCALE:
        return [(size, steps)]
    levels = 1 + math.floor(math.log2(size / AUTO_COARSEST) + 0.5)
    coarsest = max(1, round(steps * AUTO_COARSEST_SHARE))
    counts = [max(min(steps, AUTO_MIN_STEPS), round(coarsest / 4**level)) for level in range(levels)]
    return list(zip(level_sizes(size, levels, 2.0), counts))
