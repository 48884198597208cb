"""`python -m src.tools.figure RUN_DIR OUT.png`: content | style | result, side by side, for the README."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image

from src.cli.app import configure
from src.common.images import load_image
from src.common.paths import resolve_input_path
from src.render.strip import side_by_side


def run_figure(run_dir: Path) -> Image.Image:
    """content, style and final.png of a finished run."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    content = load_image(resolve_input_path(cfg.content.path), "content")
    style = load_image(resolve_input_path(cfg.style.path), "style")
    return side_by_side([content, style, load_image(run_dir / "final.png", "result")], height=384)


if __name__ == "__main__":
    configure()
    if len(sys.argv) != 3:
        sys.exit("usage: python -m src.tools.figure RUN_DIR OUT.png")
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    run_figure(Path(sys.argv[1])).save(out)
    print(out)
