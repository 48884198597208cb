import io

import numpy as np
import pytest
import torch
from PIL import Image

from src.common.errors import UserError
from src.common.images import (
    load_image,
    load_tensor,
    save_image,
    size_for_long_side,
    to_tensor,
)


def write(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_save_and_load_round_trip(tmp_path):
    tensor = torch.rand(1, 3, 10, 14, generator=torch.Generator().manual_seed(0))
    path = save_image(tensor, tmp_path / "x.png")
    loaded = load_tensor(path)
    assert loaded.shape == (1, 3, 10, 14)
    assert (loaded - tensor).abs().max() <= 0.5 / 255 + 1e-6
    assert not (tmp_path / "x.png.tmp").exists()


def test_resize_by_long_side_keeps_aspect(tmp_path):
    path = write(tmp_path, "wide.png", Image.new("RGB", (200, 100), (10, 20, 30)))
    assert load_tensor(path, long_side=64).shape == (1, 3, 32, 64)
    assert size_for_long_side(100, 300, 90) == (30, 90)
    assert load_tensor(path, size=(17, 9)).shape == (1, 3, 9, 17)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_odd_modes_load_as_rgb(tmp_path, mode):
    base = Image.new("RGB", (8, 6), (200, 100, 50))
    image = base.convert(mode) if mode != "I;16" else Image.fromarray(np.full((6, 8), 40000, np.uint16))
    path = write(tmp_path, "odd." + ("tif" if mode == "CMYK" else "png"), image)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (8, 6)


def test_transparency_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    loaded = np.asarray(load_image(write(tmp_path, "clear.png", image)))
    assert (loaded == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = write(tmp_path, "rotated.jpg", image, exif=exif)
    assert load_image(path).size == (10, 20)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixel = load_image(path).getpixel((0, 0))
    assert pixel[0] > 200 and pixel[1] < 50


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "not found"),
        (lambda p: (p.mkdir(), p)[1], "directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_text("hello, not an image"), p)[1], "not a readable image"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, make, message):
    path = make(tmp_path / "bad.jpg")
    with pytest.raises(UserError, match=message):
        load_image(path, role="content")


def test_truncated_file_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UserError, match="cut.jpg"):
        load_image(path, role="style")


def test_to_tensor_range():
    tensor = to_tensor(Image.new("RGB", (3, 2), (255, 0, 128)))
    assert tensor.shape == (1, 3, 2, 3)
    assert tensor[0, 0].max() == 1.0 and tensor[0, 1].max() == 0.0
