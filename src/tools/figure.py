"""`python -m src.tools.figure RUN_DIR OUT.png`: content | style | result, side by side, for the README."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image

import src.common.paths  # noqa: F401  (registers ${asset:})
from src.common.images import load_image
from src.common.paths import resolve_input_path


def side_by_side(images: list[Image.Image], height: int = 384, gap: int = 8) -> Image.Image:
    """The images scaled to one height and laid left to right on white."""
    scaled = [im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS) for im in images]
    sheet = Image.new("RGB", (sum(im.width for im in scaled) + gap * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        sheet.paste(im, (x, 0))
        x += im.width + gap
    return sheet


def run_figure(run_dir: Path) -> Image.Image:
    """content, style and final.png of a finished run."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    content = load_image(resolve_input_path(cfg.content.path), "content")
    style = load_image(resolve_input_path(cfg.style.path), "style")
    return side_by_side([content, style, load_image(run_dir / "final.png", "result")])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m src.tools.figure RUN_DIR OUT.png")
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    run_figure(Path(sys.argv[1])).save(out)
    print(out)
