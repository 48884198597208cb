"""Text on pictures: the font, measuring and wrapping lines, and numbers written short."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import cache
from typing import cast

from PIL import Image, ImageFont


@cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at `size` px; Pillow's own font as a fallback."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont(
            font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
        )
        return ImageFont.truetype(path, size)
    except Exception:  # pragma: no cover - matplotlib is a dependency; stay drawable without it
        return cast(ImageFont.FreeTypeFont, ImageFont.load_default(size))  # FreeType: in Pillow's wheels


def text_width(text: str, typeface: ImageFont.FreeTypeFont) -> int:
    return int(math.ceil(typeface.getlength(text))) if text else 0


def line_height(typeface: ImageFont.FreeTypeFont) -> int:
    ascent, descent = typeface.getmetrics()
    return ascent + descent + 2


def wrap(text: str, typeface: ImageFont.FreeTypeFont, width: int, max_lines: int | None = None) -> list[str]:
    """Break `text` into lines no wider than `width` px (long words are cut); '…' marks a cut tail."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        words = paragraph.split(" ")
        line = ""
        for word in words:
            candidate = f"{line} {word}" if line else word
            if text_width(candidate, typeface) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while text_width(word, typeface) > width and len(word) > 1:
                cut = len(word)
                while cut > 1 and text_width(word[:cut], typeface) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and text_width(last + "…", typeface) > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def fit_size(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of an image of `size` scaled to fit inside `box`, aspect kept."""
    scale = min(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def scale_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize; enlargements use nearest neighbour so that tiny runs show their real pixels."""
    if image.size == size:
        return image
    enlarging = size[0] >= image.size[0] and size[1] >= image.size[1]
    return image.resize(size, Image.Resampling.NEAREST if enlarging else Image.Resampling.LANCZOS)


def short_number(value: float | None) -> str:
    """3 significant digits, scientific when large or small: 123456.7 -> 1.23e+05."""
    if value is None or not isinstance(value, (int, float)):
        return "?"
    if value == 0 or (1e-2 <= abs(value) < 1e4):
        return f"{value:.3g}"
    return f"{value:.2e}"


def pretty_value(value: str) -> str:
    """Hydra turns `1e3` into `1000.0`; show floats the short way again (1e3, 0.5, 2.5e4)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if not any(c in value for c in ".eE") or value.strip().lower() in ("nan", "inf", "-inf", "+inf"):
        return value
    plain = f"{number:g}"
    mantissa, exponent = f"{number:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    scientific = f"{mantissa}e{int(exponent)}"
    if "e" in plain:
        return scientific
    return scientific if len(scientific) < len(plain) else plain


def pretty_override(override: str) -> str:
    key, sep, value = override.partition("=")
    return f"{key}={pretty_value(value)}" if sep else override


def distinct_labels(values: Sequence[str]) -> list[str]:
    """Labels for values that share a long start or end, keeping the part that tells them apart:
    file paths lose their common folder (`~/art/a/monet.jpg` -> `monet.jpg`), Hydra's quotes
    around a value go, and the rest is left as it is."""
    plain = [
        value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value for value in values
    ]
    if len(plain) > 1 and all("/" in value for value in plain):
        names = [value.rstrip("/").rsplit("/", 1)[-1] for value in plain]
        if len(set(names)) == len(names):
            return names
        prefix = os.path.commonpath(plain) if all(v.startswith("/") for v in plain) else ""
        if prefix:
            return [value[len(prefix) :].lstrip("/") for value in plain]
    return plain
