"""Pictures side by side: scaled to one height, left to right, optionally labelled underneath."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from src.render.text import font, line_height, wrap


def side_by_side(
    images: Sequence[Image.Image],
    height: int,
    gap: int = 8,
    margin: int = 0,
    background: tuple[int, int, int] = (255, 255, 255),
    labels: Sequence[str] | None = None,
) -> Image.Image:
    """`images` scaled to `height`, `gap` px apart, inside a `margin`; a label (up to two lines)
    under each image when `labels` are given."""
    scaled = [
        image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.LANCZOS)
        for image in images
    ]
    typeface, pad, wrapped = font(max(11, height // 18)), 4, []
    if labels is not None:
        wrapped = [wrap(label, typeface, image.width - 2 * pad, max_lines=2) for label, image in zip(labels, scaled)]
    text_height = max((len(lines) for lines in wrapped), default=0) * line_height(typeface)
    text_height += 2 * pad if wrapped else 0
    width = sum(image.width for image in scaled) + gap * (len(scaled) - 1) + 2 * margin
    sheet = Image.new("RGB", (width, height + text_height + 2 * margin), background)
    draw = ImageDraw.Draw(sheet)
    x = margin
    for index, image in enumerate(scaled):
        sheet.paste(image, (x, margin))
        for row, text in enumerate(wrapped[index] if wrapped else []):
            draw.text((x + pad, margin + height + pad + row * line_height(typeface)), text, fill="black", font=typeface)
        x += image.width + gap
    return sheet
