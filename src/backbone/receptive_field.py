"""Receptive fields of the backbone's units, worked out from its layers' geometry.

A unit at feature-map position (y, x) of a layer sees a square of `size` input pixels
centred on input pixel (start + y * stride, start + x * stride). The numbers come
from the kernel sizes, strides, paddings and dilations of the modules themselves, so
they stay right if the backbone changes. Pixel centres are at integer coordinates.

    size_out  = size_in + (kernel - 1) * dilation * stride_in
    stride_out = stride_in * stride
    start_out = start_in + ((kernel - 1) * dilation / 2 - padding) * stride_in
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from src.backbone.vgg import LAYER_NAMES, VGG19Features, check_layer_names


@dataclass(frozen=True)
class ReceptiveField:
    """Where the units of one layer look in the input image."""

    size: int  # side of the square each unit sees, px
    stride: int  # distance in input pixels between neighbouring units
    start: Fraction  # input-pixel coordinate of the centre of unit (0, 0)

    def center(self, index: int) -> Fraction:
        return self.start + index * self.stride

    def span(self, index: int) -> tuple[int, int]:
        """Half-open [first, last + 1) input pixels seen along one axis, not clipped."""
        first = self.center(index) - Fraction(self.size - 1, 2)
        if first.denominator != 1:  # pragma: no cover - cannot happen for odd kernels / even pools
            raise ValueError(f"receptive field does not start on a pixel: {first}")
        return int(first), int(first) + self.size

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), half-open, in input pixels; may reach outside the image."""
        top, bottom = self.span(y)
        left, right = self.span(x)
        return left, top, right, bottom

    def clipped_box(self, y: int, x: int, width: int, height: int) -> tuple[int, int, int, int]:
        """The part of box(y, x) that lies inside a width x height image."""
        left, top, right, bottom = self.box(y, x)
        return max(left, 0), max(top, 0), min(right, width), min(bottom, height)

    def as_dict(self) -> dict[str, object]:
        return {"size": self.size, "stride": self.stride, "start": float(self.start)}


def _pair(value: int | tuple[int, ...]) -> int:
    """Square kernels/strides only (VGG's): (k, k) -> k."""
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"non-square geometry {value} is not supported")
        return int(value[0])
    return int(value)


def layer_geometry(module: nn.Module) -> tuple[int, int, int, int] | None:
    """(kernel, stride, padding, dilation) of a conv or pooling module; None if it keeps geometry."""
    if isinstance(module, nn.Conv2d):
        if module.padding == "same" or isinstance(module.padding, str):
            raise ValueError("string paddings are not supported")
        return _pair(module.kernel_size), _pair(module.stride), _pair(module.padding), _pair(module.dilation)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        dilation = _pair(getattr(module, "dilation", 1))
        stride = module.stride if module.stride is not None else module.kernel_size
        return _pair(module.kernel_size), _pair(stride), _pair(module.padding), dilation
    if isinstance(module, (nn.ReLU, nn.Identity, nn.Dropout)):
        return None
    raise ValueError(f"unknown geometry for layer {module!r}")


def receptive_fields(named_modules: Iterable[tuple[str, nn.Module]]) -> dict[str, ReceptiveField]:
    """Receptive field of every layer of a sequential stack of modules."""
    size, stride, start = 1, 1, Fraction(0)
    result: dict[str, ReceptiveField] = {}
    for name, module in named_modules:
        geometry = layer_geometry(module)
        if geometry is not None:
            kernel, layer_stride, padding, dilation = geometry
            span = (kernel - 1) * dilation
            start = start + (Fraction(span, 2) - padding) * stride
            size = size + span * stride
            stride = stride * layer_stride
        result[name] = ReceptiveField(size=size, stride=stride, start=start)
    return result


def backbone_receptive_fields(backbone: VGG19Features | None = None) -> dict[str, ReceptiveField]:
    """Receptive fields of the layers of `backbone` (default: a full VGG19, built without weights)."""
    if backbone is None:
        with torch.device("meta"):
            backbone = VGG19Features(nn.Identity(), last_layer=LAYER_NAMES[-1])
    return receptive_fields(backbone.layers.named_children())


def receptive_field(layer: str, backbone: VGG19Features | None = None) -> ReceptiveField:
    check_layer_names([layer])
    return backbone_receptive_fields(backbone)[layer]


def feature_size(size: int, layer: str, backbone: VGG19Features | None = None) -> int:
    """Length of `layer`'s feature map along an axis of `size` input pixels."""
    check_layer_names([layer])
    if backbone is None:
        with torch.device("meta"):
            backbone = VGG19Features(nn.Identity(), last_layer=layer)
    for name, module in backbone.layers.named_children():
        geometry = layer_geometry(module)
        if geometry is not None:
            kernel, stride, padding, dilation = geometry
            size = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if name == layer:
            return size
    raise ValueError(f"layer {layer} is beyond this backbone's cut")
