"""Will a run fit? Refuse impossible sizes up front, with the limit named, instead of an OOM kill."""

from __future__ import annotations

from src.backbone.vgg import LAYER_NAMES, VGG19_BLOCKS, deepest_layer
from src.common.devices import available_bytes
from src.common.errors import UserError

BYTES_PER_FLOAT = 4
# Fixed cost: weights, Python, Lightning, buffers.
BASE_BYTES = 1.5 * 2**30
# Activations kept for the backward pass, plus the transient gradients of the widest layers.
ACTIVATION_FACTOR = 1.5


def pools_before(layer: str) -> int:
    return sum(name.startswith("pool") for name in LAYER_NAMES[: LAYER_NAMES.index(layer)])


def check_large_enough(height: int, width: int, layers: list[str], role: str) -> None:
    """Every used layer must have at least one position: 2**pools pixels on the short side."""
    deepest = deepest_layer(layers)
    needed = 2 ** pools_before(deepest)
    if min(height, width) < needed:
        raise UserError(
            f"the {role} image would be {width}x{height} px, too small for layer {deepest}, "
            f"which needs at least {needed} px on the short side; raise size (or style_size)"
        )


def activation_bytes(
    height: int, width: int, last_layer: str, only: list[str] | None = None, bytes_per_value: int = BYTES_PER_FLOAT
) -> int:
    """Bytes of the layer outputs up to `last_layer` (or only those named) for one image."""
    total, h, w, channels = 0, height, width, 3
    for name in LAYER_NAMES[: LAYER_NAMES.index(last_layer) + 1]:
        if name.startswith("pool"):
            h, w = h // 2, w // 2
        else:
            channels = VGG19_BLOCKS[int(name[4]) - 1][0]
        if only is None or name in only:
            total += channels * h * w * bytes_per_value
    return total


def estimated_peak_bytes(
    height: int, width: int, layers: list[str], history_size: int, compute_dtype: str = "float32"
) -> int:
    image = 3 * height * width * BYTES_PER_FLOAT
    optimiser = (2 * history_size + 4) * image  # L-BFGS keeps s and y vectors; Adam ~ 4 images
    last = deepest_layer(layers)
    if compute_dtype == "float32":
        activations = ACTIVATION_FACTOR * activation_bytes(height, width, last)
    else:  # bf16 activations, plus a float32 copy of a used one at a time (a Gram matrix's input)
        widest = max(activation_bytes(height, width, last, only=[name]) for name in layers)
        activations = ACTIVATION_FACTOR * activation_bytes(height, width, last, bytes_per_value=2) + widest
    return int(BASE_BYTES + activations + optimiser)


def check_fits(
    height: int,
    width: int,
    layers: list[str],
    history_size: int,
    accelerator: str,
    size: int,
    compute_dtype: str = "float32",
) -> None:
    needed = estimated_peak_bytes(height, width, layers, history_size, compute_dtype)
    have, what = available_bytes(accelerator)
    if needed > have:
        raise UserError(
            f"size={size} ({width}x{height} px) needs about {needed / 2**30:.1f} GiB, "
            f"more than the {have / 2**30:.1f} GiB of {what}; choose a smaller size"
        )
