"""16-bit PNG and TIFF files with an embedded sRGB profile, for print.

The image is optimised in float32; final.png rounds it to 8 bits. `export=[png16,tiff16]`
also writes final_16bit.png / final_16bit.tif with 65536 levels per channel and an sRGB ICC
profile (from LittleCMS, through Pillow), so that print drivers and editors read the colours
as the screen showed them. Pillow cannot write 16-bit RGB PNGs, so the PNG is assembled here
(its format is a few chunks); the TIFF is written by tifffile.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

EXPORT_FORMATS = {"png16": "final_16bit.png", "tiff16": "final_16bit.tif"}


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile (v2, as LittleCMS builds it)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def to_uint16(image: torch.Tensor) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) float image in [0, 1] -> (H, W, 3) uint16, rounded."""
    array = image.detach().float().cpu().reshape(-1, *image.shape[-2:])[:3]
    return (array.clamp(0, 1) * 65535.0).round().to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(pixels: np.ndarray, path: str | Path) -> None:
    """(H, W, 3) uint16 -> a 16-bit RGB PNG with an iCCP (sRGB) chunk; rows unfiltered."""
    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, truecolour
    icc = b"sRGB\x00\x00" + zlib.compress(srgb_profile())  # name, NUL, compression method 0
    rows = np.ascontiguousarray(pixels.astype(">u2")).reshape(height, width * 3)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows.view(np.uint8)], axis=1)
    body = zlib.compress(raw.tobytes(), 6)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"iCCP", icc)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )
    _write_atomically(path, data)


def write_tiff16(pixels: np.ndarray, path: str | Path) -> None:
    """(H, W, 3) uint16 -> a 16-bit RGB TIFF (deflate) with the sRGB profile (tag 34675)."""
    import tifffile

    temporary = Path(f"{path}.tmp")
    tifffile.imwrite(
        temporary, pixels, photometric="rgb", compression="zlib", extratags=[(34675, 7, None, srgb_profile(), True)]
    )
    temporary.replace(path)


def _write_atomically(path: str | Path, data: bytes) -> None:
    temporary = Path(f"{path}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def export_image(image: torch.Tensor, output_dir: str | Path, formats: list[str]) -> list[Path]:
    """Write the image in each of `formats` (png16, tiff16) into `output_dir`; the paths written."""
    pixels = to_uint16(image)
    written = []
    for kind in formats:
        path = Path(output_dir) / EXPORT_FORMATS[kind]
        (write_png16 if kind == "png16" else write_tiff16)(pixels, path)
        written.append(path)
    return written
