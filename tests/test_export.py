"""16-bit print exports (src/common/export.py): the pixels read back exactly, with the sRGB profile."""

from __future__ import annotations

import io

import cv2
import numpy as np
import tifffile
import torch
from PIL import Image, ImageCms

from src.common.export import export_image, srgb_profile, to_uint16


def gradient_image() -> torch.Tensor:
    """A smooth ramp: 8 bits would quantise it to 256 levels, 16 bits keep thousands."""
    ramp = torch.linspace(0, 1, 2000).view(1, 1, 1, 2000).expand(1, 3, 37, 2000).clone()
    ramp[:, 1] = 1 - ramp[:, 1]
    ramp[:, 2, :19] = 0.25
    return ramp


def test_png16_and_tiff16_read_back_exactly_with_the_srgb_profile(tmp_path):
    image = gradient_image()
    written = export_image(image, tmp_path, ["png16", "tiff16"])
    assert [p.name for p in written] == ["final_16bit.png", "final_16bit.tif"]
    expected = to_uint16(image)
    assert len(np.unique(expected[..., 0])) > 1500  # far more levels than 8 bits hold
    png = cv2.imread(str(tmp_path / "final_16bit.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (37, 2000, 3)
    np.testing.assert_array_equal(png[..., ::-1], expected)  # OpenCV reads BGR
    with tifffile.TiffFile(tmp_path / "final_16bit.tif") as tiff:
        np.testing.assert_array_equal(tiff.asarray(), expected)
        assert tiff.pages[0].tags[34675].value == srgb_profile()
    with Image.open(tmp_path / "final_16bit.png") as png_file:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(png_file.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)
    assert not list(tmp_path.glob("*.tmp"))


def test_values_round_to_the_nearest_level():
    image = torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1, 1 / 65535]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint16(image)[0, :, 0].tolist() == [0, 32768, 65535, 65535, 0, 1]
