"""Reading a run's inputs: the content, every style (presets, blends, masks), the initial image."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from src.common.images import (
    load_image,
    load_tensor,
)
from src.common.paths import PROJECT_ROOT, resolve_input_path
from src.nst.color import match_color, match_luminance
from src.nst.masks import is_shape, load_mask_image

STYLE_PRESET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def make_init_image(cfg: DictConfig, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    kind = cfg.init.kind
    if kind == "content":
        return content.clone()
    if kind == "noise":
        # White noise, uniform in [0, 1], from its own seeded generator (Gatys et al.).
        generator = torch.Generator().manual_seed(int(cfg.seed))
        return torch.rand(content.shape, generator=generator)
    height, width = content.shape[-2:]
    if kind == "style":
        return torch.nn.functional.interpolate(
            style, size=(height, width), mode="bicubic", align_corners=False, antialias=True
        ).clamp(0, 1)
    return load_tensor(resolve_input_path(cfg.init.path), size=(width, height), role="init")


@dataclass
class StyleInput:
    """One style of the run, read from disk: the image, its share of beta, its mask, its name."""

    image: Image.Image
    weight: float
    mask: str | Image.Image | None
    name: str


@dataclass
class Inputs:
    content: Image.Image
    styles: list[StyleInput]


def style_preset_path(name: str) -> str | None:
    """The image of a style preset (conf/style/<name>.yaml), so that blends can name presets."""
    if not STYLE_PRESET_NAME.match(name):
        return None
    preset = PROJECT_ROOT / "conf" / "style" / f"{name}.yaml"
    if not preset.is_file():
        return None
    return str(OmegaConf.load(preset).path)


def resolve_style_path(path: str) -> Path:
    """A style path: a file (relative to the launch directory) or a style preset's name."""
    resolved = resolve_input_path(path)
    if not resolved.exists():
        preset = style_preset_path(str(path))
        if preset is not None:
            return Path(preset)
    return resolved


def style_entries(cfg: DictConfig) -> list[tuple[str, str, float, str | None]]:
    """(key, path, weight, mask) of every style: style.path, then each of style.blend."""
    entries = [("style", cfg.style.path, float(cfg.style.get("weight", 1.0)), cfg.style.get("mask"))]
    for index, entry in enumerate(cfg.style.get("blend") or []):
        entries.append((f"style.blend.{index}", entry.path, float(entry.get("weight", 1.0)), entry.get("mask")))
    return entries


def load_inputs(cfg: DictConfig) -> Inputs:
    """Read and check every input file (content, styles, masks, init) before any model loads."""
    content = load_image(resolve_input_path(cfg.content.path), role="content")
    entries = style_entries(cfg)
    total = sum(weight for _, _, weight, _ in entries)
    styles: list[StyleInput]
    names: list[str]
    mask: str | Image.Image | None
    styles, names = [], []
    for key, path, weight, mask in entries:
        image = load_image(resolve_style_path(path), role="style" if key == "style" else key)
        if mask is not None and not is_shape(mask):
            mask = load_mask_image(resolve_input_path(mask), role=f"{key}.mask")
        name = Path(str(path)).stem or key
        if name in names:
            name = f"{name}_{len(names)}"
        names.append(name)
        styles.append(StyleInput(image, weight / total, mask, name))
    if cfg.init.kind == "image":
        load_image(resolve_input_path(cfg.init.path), role="init")  # checked now, read later
    return Inputs(content, styles)


def style_long_side(cfg: DictConfig, size: int) -> int:
    """The style image's long side for an output of long side `size` (a pyramid level)."""
    full = cfg.style_size or (
        cfg.size if cfg.get("style_scale", 1.0) == 1.0 else max(1, round(cfg.style_scale * cfg.size))
    )
    return full if size == cfg.size else max(1, round(full * size / cfg.size))


def prepare_styles(cfg: DictConfig, styles: list[torch.Tensor], content: torch.Tensor) -> list[torch.Tensor]:
    """color=match recolours each style to the content's colours; color=luminance makes it grey,
    with the content's mean and spread of luminance."""
    color = cfg.get("color", "none")
    if color == "match":
        return [match_color(style, content) for style in styles]
    if color == "luminance":
        return [match_luminance(style, content) for style in styles]
    return styles
