"""Loading, checking, resizing and saving images.

Images travel through the code as float tensors of shape (1, 3, H, W), RGB, in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from src.common.errors import UserError
from src.common.files import atomic_path
from src.common.paths import check_input_file

# Refuse images whose decoded size would not fit comfortably in memory (PIL's own bomb
# check warns at ~89 Mpx and errors at twice that; we error at the warning level).
MAX_PIXELS = 89_478_485
MIN_SIZE = 32


def check_image_file(path: str | os.PathLike, role: str) -> Path:
    """Fail with a one-line message if `path` is not a readable image file."""
    path = Path(path)
    check_input_file(path, f"{role} image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise UserError(f"{role} image {path} is too large ({width}x{height} px, limit {MAX_PIXELS} px)")
            image.verify()
    except UserError:
        raise
    except Image.DecompressionBombError as error:
        raise UserError(
            f"{role} image {path} is too large to decode safely (limit {MAX_PIXELS} px): {error}"
        ) from error
    except UnidentifiedImageError as error:
        raise UserError(f"{role} image {path} is not a readable image: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"{role} image {path} is corrupt or truncated: {error}") from error
    return path


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white; EXIF rotation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than clip.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def load_image(path: str | os.PathLike, role: str = "input") -> Image.Image:
    """Open, check and convert an image file to RGB (first frame of an animation)."""
    path = check_image_file(path, role)
    try:
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            return to_rgb(image)
    except OSError as error:
        raise UserError(f"{role} image {path} is corrupt or truncated: {error}") from error


def size_for_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `long_side`, aspect kept."""
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to (width, height); LANCZOS (antialiased) both down and up."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    array = tensor.detach().float().clamp(0, 1).squeeze(0).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8), "RGB")


def save_image(tensor: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a (1, 3, H, W) tensor in [0, 1] as an image; written atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        to_pil(tensor).save(temporary, format=(path.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"))
    return path


def load_tensor(
    path: str | os.PathLike, long_side: int | None = None, size: tuple[int, int] | None = None, role: str = "input"
) -> torch.Tensor:
    """Load an image file as a (1, 3, H, W) tensor, resized by long side or to an exact (width, height)."""
    image = load_image(path, role)
    if size is None and long_side is not None:
        size = size_for_long_side(*image.size, long_side)
    if size is not None:
        image = resize(image, size)
    return to_tensor(image)
