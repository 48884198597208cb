"""The one-line messages for input files that cannot be used: every kind of bad path for an
image or video, a VGG19 weight file that is not one, and the warning for an enlarged image."""

from __future__ import annotations

import logging

import pytest
import torch

from src.backbone.vgg import read_state
from src.common.errors import UserError
from src.common.paths import check_input_file
from src.transfer.build import warn_if_enlarged


def bad_paths(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.jpg"
    broken.symlink_to(tmp_path / "gone.jpg")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    return {
        loop: "is a symbolic link loop",
        broken: "is a broken symbolic link (to ",
        folder: "path is a directory, not a file",
        empty: "is an empty (zero-byte) file",
        tmp_path / "missing.jpg": "not found",
    }


def test_every_kind_of_unusable_input_file_is_named_in_one_line(tmp_path):
    for path, problem in bad_paths(tmp_path).items():
        with pytest.raises(UserError) as raised:
            check_input_file(path, "content image")
        message = str(raised.value)
        assert message.startswith("content image ") and problem in message and str(path) in message
        assert "\n" not in message


def test_a_weight_file_that_is_not_one_is_named_in_one_line(tmp_path):
    garbage = tmp_path / "vgg.pth"
    garbage.write_bytes(b"not a weight file at all")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    cases = {
        tmp_path / "missing.pth": "VGG19 weight file not found",
        tmp_path: "is a folder; give the weight file",
        garbage: "not a PyTorch weight file",
        tensor: "holds a Tensor, not a dict of tensors",
    }
    loop = tmp_path / "loop.pth"
    loop.symlink_to(loop)
    cases[loop] = "VGG19 weight file is a symbolic link loop"
    for path, problem in cases.items():
        with pytest.raises(UserError) as raised:
            read_state(path)
        assert problem in str(raised.value) and "backbone.weights_path" in str(raised.value)
        assert "\n" not in str(raised.value)


def test_an_image_blown_up_more_than_twice_is_warned_of_and_one_that_is_not_is_not(caplog):
    with caplog.at_level(logging.WARNING, logger="src.transfer.build"):
        warn_if_enlarged("content", (300, 200), (600, 400))  # exactly twice: fine
        assert not caplog.records
        warn_if_enlarged("style", (300, 200), (1024, 683))
    (record,) = caplog.records
    assert "the style image is 300x200 px and is enlarged to 1024x683 px: expect a blurry result" in record.message
