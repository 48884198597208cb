"""progress.gif: the snapshots of a run, captioned with their steps."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from src.common.files import atomic_path
from src.render.text import font, line_height, scale_image

GIF_MIN_SIDE = 256  # tiny test runs are enlarged (pixel-exact) so that the animation is visible


GIF_MAX_SIDE = 768


GIF_MAX_FRAMES = 120


def write_progress_gif(
    frames: Sequence[tuple[int, Image.Image | str | os.PathLike]],
    path: str | os.PathLike,
    total_steps: int | None = None,
) -> Path:
    """Animate (step, image) frames, first to last, each captioned with its step; the last is held.

    Images may be PIL images or paths. Long runs are thinned to at most GIF_MAX_FRAMES frames,
    always keeping the first and the last.
    """
    frames = sorted(frames, key=lambda frame: frame[0])
    if not frames:
        raise ValueError("no frames to animate")
    if len(frames) > GIF_MAX_FRAMES:
        stride = (len(frames) - 1) / (GIF_MAX_FRAMES - 1)
        frames = [frames[round(i * stride)] for i in range(GIF_MAX_FRAMES)]
    total = total_steps if total_steps is not None else frames[-1][0]
    pictures = []
    for step, source in frames:
        image = source if isinstance(source, Image.Image) else Image.open(source)
        image.load()
        pictures.append((step, image.convert("RGB")))
    width, height = pictures[-1][1].size
    long_side = max(width, height)
    scale = 1.0
    if long_side < GIF_MIN_SIDE:
        scale = math.ceil(GIF_MIN_SIDE / long_side)
    elif long_side > GIF_MAX_SIDE:
        scale = GIF_MAX_SIDE / long_side
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    caption_font = font(max(11, min(18, size[0] // 20)))
    bar = line_height(caption_font) + 6
    rendered = []
    for step, image in pictures:
        canvas = Image.new("RGB", (size[0], size[1] + bar), (255, 255, 255))
        canvas.paste(scale_image(image, size), (0, 0))
        draw = ImageDraw.Draw(canvas)
        label = "initial image" if step == 0 else f"step {step}" + (f" / {total}" if total else "")
        draw.text((6, size[1] + 3), label, fill=(0, 0, 0), font=caption_font)
        if total:
            draw.rectangle((0, size[1], round(size[0] * min(1.0, step / total)), size[1] + 2), fill=(200, 40, 40))
        rendered.append(canvas)
    per_frame = int(min(400, max(60, 5000 / max(1, len(rendered)))))
    durations = [per_frame] * len(rendered)
    durations[-1] = 2000
    if len(durations) > 1:
        durations[0] = max(per_frame, 600)
    path = Path(path)
    with atomic_path(path) as temporary:
        rendered[0].save(
            temporary,
            format="GIF",
            save_all=True,
            append_images=rendered[1:],
            duration=durations,
            loop=0,
            optimize=False,
            disposal=1,
        )
    return path
