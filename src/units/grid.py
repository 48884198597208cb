"""Cropping receptive-field patches and laying them out as grids (PIL images)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from src.render.text import font

# What the network sees beyond the border: its zero padding is the mean colour of the
# training images (both backbones subtract the ImageNet mean before the first conv).
PAD_COLOUR = (124, 116, 104)
BACKGROUND = (228, 228, 228)  # light grey: white and black patches both stand out
TEXT = (0, 0, 0)


def crop_patch(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The square `box` (left, top, right, bottom; may reach outside) cut out of `image`.

    The part outside the image is filled with PAD_COLOUR, so every patch of a layer is
    the same size and the unit's centre is the patch's centre.
    """
    left, top, right, bottom = box
    patch = Image.new("RGB", (right - left, bottom - top), PAD_COLOUR)
    inner = (max(left, 0), max(top, 0), min(right, image.width), min(bottom, image.height))
    if inner[0] < inner[2] and inner[1] < inner[3]:
        patch.paste(image.crop(inner), (inner[0] - left, inner[1] - top))
    return patch


def cell_size(patch_size: int, min_cell: int, max_cell: int) -> int:
    """Display size of a patch: small patches blown up by a whole factor, big ones shrunk."""
    if patch_size < min_cell:
        return patch_size * math.ceil(min_cell / patch_size)
    return min(patch_size, max_cell)


def fit(patch: Image.Image, size: int) -> Image.Image:
    if patch.size == (size, size):
        return patch
    if size >= 2 * patch.width:
        return patch.resize((size, size), Image.Resampling.NEAREST)  # keep pixels visible
    return patch.resize((size, size), Image.Resampling.LANCZOS)


def unit_block(patches: Sequence[Image.Image | None], cell: int, columns: int, gap: int = 2) -> Image.Image:
    """Patches of one unit, best first, row by row; missing patches stay blank."""
    rows = max(1, math.ceil(len(patches) / columns))
    block = Image.new("RGB", (columns * cell + (columns - 1) * gap, rows * cell + (rows - 1) * gap), BACKGROUND)
    for index, patch in enumerate(patches):
        if patch is not None:
            row, column = divmod(index, columns)
            block.paste(fit(patch, cell), (column * (cell + gap), row * (cell + gap)))
    return block


def layer_grid(
    title: str,
    units: Sequence[tuple[str, Sequence[Image.Image | None], Image.Image | None]],
    patch_size: int,
    patches_per_unit: int,
    min_cell: int = 48,
    max_cell: int = 160,
) -> Image.Image:
    """One layer: for every unit a square block of its patches, under a label.

    units: (label, patches best first, optional extra image shown right of the block, e.g.
    the unit's activation-maximisation image) per unit.
    """
    cell = cell_size(patch_size, min_cell, max_cell)
    columns = max(1, math.ceil(math.sqrt(patches_per_unit)))
    gap, unit_gap = max(2, cell // 24), max(8, cell // 4)
    blocks = []
    for label, patches, extra in units:
        block = unit_block(list(patches) + [None] * (patches_per_unit - len(patches)), cell, columns, gap)
        if extra is not None:
            side = block.height
            wide = Image.new("RGB", (block.width + gap * 3 + side, side), BACKGROUND)
            wide.paste(block, (0, 0))
            wide.paste(fit(extra, side), (block.width + gap * 3, 0))
            block = wide
        blocks.append((label, block))
    # Text grows with the cells, so that it reads the same once overview.png scales layers alike.
    label_size, title_size = max(12, cell // 5), max(16, cell // 3)
    label_height, title_height = label_size + 4, title_size + 12
    label_font = font(label_size)
    unit_columns = max(1, math.ceil(math.sqrt(len(blocks))))
    unit_rows = max(1, math.ceil(len(blocks) / unit_columns))
    block_w = max((b.width for _, b in blocks), default=cell)
    block_h = max((b.height for _, b in blocks), default=cell)
    width = unit_columns * block_w + (unit_columns + 1) * unit_gap
    height = title_height + unit_rows * (block_h + label_height) + (unit_rows + 1) * unit_gap
    title_font = font(title_size)
    width = max(width, int(title_font.getlength(title)) + 2 * unit_gap)
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    draw.text((unit_gap, 6), title, fill=TEXT, font=title_font)
    for index, (label, block) in enumerate(blocks):
        row, column = divmod(index, unit_columns)
        x = unit_gap + column * (block_w + unit_gap)
        y = title_height + unit_gap + row * (block_h + label_height + unit_gap)
        draw.text((x, y), label, fill=TEXT, font=label_font)
        grid.paste(block, (x, y + label_height))
    return grid
