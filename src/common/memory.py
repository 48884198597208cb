"""Will a run fit? Refuse impossible sizes up front, with the limit named, instead of an OOM kill."""

from __future__ import annotations

import gc
import os

import torch

from src.backbone.vgg import LAYER_NAMES, VGG19_BLOCKS, deepest_layer
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


def activation_bytes(height: int, width: int, last_layer: str, only: list[str] | None = None, bytes_per_value: int = BYTES_PER_FLOAT) -> int:
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


def estimated_peak_bytes(height: int, width: int, layers: list[str], history_size: int, compute_dtype: str = "float32") -> int:
    image = 3 * height * width * BYTES_PER_FLOAT
    optimiser = (2 * history_size + 4) * image  # L-BFGS keeps s and y vectors; Adam ~ 4 images
    last = deepest_layer(layers)
    if compute_dtype == "float32":
        activations = ACTIVATION_FACTOR * activation_bytes(height, width, last)
    else:  # bf16 activations, plus a float32 copy of a used one at a time (a Gram matrix's input)
        widest = max(activation_bytes(height, width, last, only=[name]) for name in layers)
        activations = ACTIVATION_FACTOR * activation_bytes(height, width, last, bytes_per_value=2) + widest
    return int(BASE_BYTES + activations + optimiser)


def target_device(accelerator: str) -> torch.device:
    """The device of a run with `device.accelerator`: auto = a CUDA GPU if there is one, else
    the CPU (not Apple's MPS, which lacks the float64 that some controls use)."""
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device.accelerator={accelerator}: no CUDA GPU is available here; use device=cpu or device=auto")
        return torch.device("cuda")
    if accelerator not in ("auto", "cpu"):
        raise UserError(f"device.accelerator={accelerator!r}: must be one of auto, cpu, gpu")
    return torch.device("cuda" if accelerator == "auto" and torch.cuda.is_available() else "cpu")


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return 0


def available_bytes(accelerator: str) -> tuple[int, str]:
    """Memory this process's run may reach. On the CPU that is what the system has available
    plus what the process already holds, since the estimate is of its whole peak (BASE_BYTES
    included): counting Python and torch, already loaded, against the rest refused sizes
    that fit."""
    if target_device(accelerator).type == "cuda":
        # An earlier run's module (a pyramid's coarser level, a sweep's last job) may still be
        # on the GPU until collected; then torch's cache of freed blocks is free too.
        gc.collect()
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        return int(free), "free GPU memory"
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + resident_bytes(), "available memory"
    except OSError:  # pragma: no cover - not Linux: no check
        pass
    return 2**62, "memory"  # pragma: no cover - not Linux


def check_fits(height: int, width: int, layers: list[str], history_size: int, accelerator: str, size: int, compute_dtype: str = "float32") -> None:
    needed = estimated_peak_bytes(height, width, layers, history_size, compute_dtype)
    have, what = available_bytes(accelerator)
    if needed > have:
        raise UserError(
            f"size={size} ({width}x{height} px) needs about {needed / 2**30:.1f} GiB, "
            f"more than the {have / 2**30:.1f} GiB of {what}; choose a smaller size"
        )
