"""Runs larger than memory: the module in tiles, and the plan that decides when to tile.

A run is untiled when its estimated peak fits (fastest; results as they always were), else
tiled (src/nst/tiling.py: the same loss and gradient, memory bounded by the tile) with the
largest tile, then the largest L-BFGS history, that fits. `tile_size=N` forces tiles of N px;
`tile_size=0` never tiles. The refusal names the largest size that would fit. A run on
several devices (device.devices=N) is tiled so that each has tiles to compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from src.backbone.receptive_field import receptive_field
from src.backbone.vgg import deepest_layer
from src.common.devices import available_bytes, target_device
from src.common.errors import UserError
from src.nst.distributed import TileGroup
from src.nst.tiling import TiledObjective
from src.transfer.memory import ACTIVATION_FACTOR, BASE_BYTES, BYTES_PER_FLOAT, activation_bytes, estimated_peak_bytes
from src.transfer.module import StyleTransfer

# Tile sizes tried, largest first: a larger tile repeats less of its margin (less time).
TILE_SIZES = (1536, 1024, 768, 512, 384, 256)
LARGE_TILE = 768
# L-BFGS histories tried when the configured one does not fit, largest first.
HISTORY_SIZES = (20, 10, 5, 3)
# Image-sized float32 buffers of a tiled run besides the optimiser's: the image and its
# gradient, the content image, the last good image, the TV term's graph, crop copies.
TILED_IMAGE_BUFFERS = 8
# The leader of a shared run also holds the tiles' image gradients until it adds them up in
# order: its own and the followers' (their crops overlap: more than one image's worth).
SHARED_IMAGE_BUFFERS = 2


class TiledStyleTransfer(StyleTransfer):
    """StyleTransfer whose loss and gradient are computed in tiles of about `tile_size` px.

    `losses` returns the same terms as the untiled module; where a gradient is wanted, the
    total carries the exact tiled gradient (J + <x, g> - <x, g>.detach(): the value J, the
    gradient g), so Lightning's optimiser loop, the loss scale and evaluation are unchanged."""

    def __init__(self, *args: Any, tile_size: int, group: TileGroup | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tile_size = int(tile_size)
        self.tiling = TiledObjective(self, self.tile_size, group)

    @torch.no_grad()
    def compute_targets(self) -> None:
        self.tiling.compute_targets()

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if not (torch.is_grad_enabled() and image.requires_grad):
            return self.tiling.terms(image)
        terms, gradient = self.tiling.terms_and_gradient(image)
        linear = (image * gradient).sum()
        terms["loss/total"] = terms["loss/total"] + (linear - linear.detach())
        return terms

    def tiling_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"tile_size": self.tile_size, "tiles": len(self.tiling.tiles)}
        group = self.tiling.group
        if group is not None:
            summary["devices"] = group.world
            summary["tiles_per_device"] = [self.tiling.tiles_of(rank) for rank in range(group.world)]
        return summary


@dataclass(frozen=True)
class MemoryPlan:
    """How a run fits: untiled (tile_size None) or in tiles, with this L-BFGS history."""

    tile_size: int | None
    history_size: int
    needed_bytes: int
    fits_whole: bool = False  # tiled only to share the run between devices: one device could take it whole


def activation_peak_bytes(height: int, width: int, layers: list[str], compute_dtype: str) -> float:
    """The backbone's share of a pass over a height x width image (as estimated_peak_bytes counts it)."""
    last = deepest_layer(layers)
    if compute_dtype == "float32":
        return ACTIVATION_FACTOR * activation_bytes(height, width, last)
    widest = max(activation_bytes(height, width, last, only=[name]) for name in layers)
    return ACTIVATION_FACTOR * activation_bytes(height, width, last, bytes_per_value=2) + widest


def crop_side(length: int, tile_size: int, layers: list[str]) -> int:
    """The longest crop of a tile along an axis: its core and the deepest layer's margin."""
    deepest = receptive_field(deepest_layer(layers))
    return min(length, tile_size + deepest.size + deepest.stride)


@dataclass(frozen=True)
class RunShape:
    """What a run's memory depends on: its size, the layers it reads, its L-BFGS history
    (0: another optimiser) and the backbone's arithmetic."""

    height: int
    width: int
    layers: list[str]
    content_layers: list[str]
    history_size: int
    compute_dtype: str

    def untiled_bytes(self, history_size: int) -> int:
        return estimated_peak_bytes(self.height, self.width, self.layers, history_size, self.compute_dtype)

    def tiled_bytes(self, history_size: int, tile_size: int) -> int:
        """The peak of a tiled run: one crop's activations, the content targets at the whole
        image's size, and the image-sized buffers (the optimiser's history among them)."""
        height, width, layers = self.height, self.width, self.layers
        image = 3 * height * width * BYTES_PER_FLOAT
        crop = activation_peak_bytes(
            crop_side(height, tile_size, layers), crop_side(width, tile_size, layers), layers, self.compute_dtype
        )
        content = activation_bytes(height, width, deepest_layer(self.content_layers), only=self.content_layers)
        return int(BASE_BYTES + crop + content + (2 * history_size + 4 + TILED_IMAGE_BUFFERS) * image)


# Measured on the CPU (bfloat16, 1024 px, docs/devices.md): a tiled step takes 1.2 times what
# its crops' pixels predict against an untiled step (the moments' sums in float32 and float64,
# the messages), and 2 threads run 1.8 times as fast as 1.
TILED_COST_FACTOR = 1.2
THREAD_EFFICIENCY = 0.9


def shared_cost_ratio(tiling: TiledObjective, on_cpu: bool) -> float:
    """About how long a shared tiled step takes against an untiled step on one device (on the
    CPU: one process with every core): the busiest process's pixels (a forward and a backward
    of each of its crops, another forward of each but its last) over the image's (a forward
    and a backward), a backward costing two forwards."""
    height, width = tiling.module.image.shape[-2:]
    areas = [(t.rows.stop - t.rows.start) * (t.cols.stop - t.cols.start) for t in tiling.tiles]
    world = 1 if tiling.group is None else tiling.group.world
    busiest = max(
        sum(4 * areas[i] for i, owner in enumerate(tiling.owners) if owner == rank)
        - max((areas[i] for i, owner in enumerate(tiling.owners) if owner == rank), default=0)
        for rank in range(world)
    )
    ratio = TILED_COST_FACTOR * busiest / (3 * height * width)
    return ratio * world * THREAD_EFFICIENCY if on_cpu else ratio


def history_options(history_size: int) -> list[int]:
    """The configured L-BFGS history, then the shorter ones of HISTORY_SIZES (0: not L-BFGS)."""
    return [history_size, *(h for h in HISTORY_SIZES if h < history_size)] if history_size else [0]


def first_tiled_plan(shape: RunShape, have: int, tiles: list[int], extra_bytes: int = 0) -> MemoryPlan | None:
    """The first of `tiles` and of the histories that fits in `have` (with `extra_bytes` more held).
    Large tiles first, each with the largest history that fits: small tiles repeat their
    margins (a 256 px tile's crop is 2.8 times its area), a shorter history costs less."""
    for group in ([t for t in tiles if t >= LARGE_TILE], [t for t in tiles if t < LARGE_TILE]):
        for history in history_options(shape.history_size):
            for tile in group:
                needed = shape.tiled_bytes(history, tile)
                if needed + extra_bytes <= have:
                    return MemoryPlan(tile, history, needed + extra_bytes)
    return None


def plan_memory(shape: RunShape, have: int, tile_size: int | None = None) -> MemoryPlan | None:
    """Untiled when the run fits with its history; else the largest tile, then the largest
    history, that fits. `tile_size` None: choose; 0: never tile; N: tiles of N px. None: nothing fits."""
    histories = history_options(shape.history_size)
    if not tile_size:
        for history in histories if tile_size == 0 else histories[:1]:
            needed = shape.untiled_bytes(history)
            if needed <= have:
                return MemoryPlan(None, history, needed)
        if tile_size == 0:
            return None
    long_side = max(shape.height, shape.width)
    tiles = [tile_size] if tile_size else [t for t in TILE_SIZES if t < long_side] or [TILE_SIZES[-1]]
    return first_tiled_plan(shape, have, tiles)


def even_tile_sizes(height: int, width: int, devices: int) -> list[int]:
    """Tile sizes that cut the long side into 2, 3, ... equal parts (stride-aligned) and give
    at least `devices` tiles, largest first: the processes then get tiles of equal cost."""
    long_side = max(height, width)
    sizes = []
    for parts in range(2, max(3, long_side // TILE_SIZES[-1] + 2)):
        tile = max(16, math.ceil(long_side / parts / 16) * 16)
        if math.ceil(height / tile) * math.ceil(width / tile) >= devices and tile not in sizes:
            sizes.append(tile)
    return sizes


def plan_shared(shape: RunShape, have: int, devices: int) -> MemoryPlan | None:
    """The plan of a run shared by `devices` processes: the largest even tiles that fit, with
    the largest history that fits; None if the image is too small to share."""
    held = SHARED_IMAGE_BUFFERS * 3 * shape.height * shape.width * BYTES_PER_FLOAT
    return first_tiled_plan(shape, have, even_tile_sizes(shape.height, shape.width, devices), held)


def largest_fitting_size(shape: RunShape, have: int, tile_size: int | None) -> int | None:
    """The largest long side (same aspect) for which `plan_memory` finds a plan."""
    aspect = shape.height / shape.width

    def fits(long_side: int) -> bool:
        width, height = (
            (long_side, max(1, round(long_side * aspect)))
            if aspect <= 1
            else (max(1, round(long_side / aspect)), long_side)
        )
        return plan_memory(replace(shape, height=height, width=width), have, tile_size) is not None

    low, high = 64, 65536
    if not fits(low):
        return None
    while high - low > 16:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def plan_run(
    shape: RunShape,
    accelerator: str,
    size: int,
    tile_size: int | None,
    style_sizes: list[tuple[int, int]],
    devices: int = 1,
) -> MemoryPlan:
    """The memory plan of a run at `size` (its content `shape.height` x `shape.width`), or a
    one-line refusal that names the largest size that would fit. A style image too large to
    take whole makes the run tiled (its targets are then summed in tiles too). On `devices` > 1
    the run is tiled in at least that many tiles, of even sizes."""
    have, what = available_bytes(accelerator)
    if devices > 1 and target_device(accelerator).type == "cpu":
        have //= devices  # the processes share the machine's memory
        what = f"{what} / {devices} processes"
    plan = None
    if devices > 1 and tile_size is None:
        plan = plan_shared(shape, have, devices)
        whole = plan_memory(shape, have * devices, None)
        if plan is not None and whole is not None and whole.tile_size is None:
            plan = replace(plan, fits_whole=True)
    if plan is None:
        plan = plan_memory(shape, have, tile_size)
    style_layers = [name for name in shape.layers if name not in shape.content_layers] or shape.layers
    if plan is not None and plan.tile_size is None and tile_size != 0:
        style_bytes = (estimated_peak_bytes(h, w, style_layers, 0, shape.compute_dtype) for w, h in style_sizes)
        if any(needed > have for needed in style_bytes):
            plan = plan_memory(shape, have, TILE_SIZES[0]) or plan_memory(shape, have, TILE_SIZES[-1])
    if plan is not None:
        return plan
    smallest = tile_size if tile_size else TILE_SIZES[-1]
    history = shape.history_size
    needed = (
        shape.untiled_bytes(history)
        if tile_size == 0
        else shape.tiled_bytes(HISTORY_SIZES[-1] if history else 0, smallest)
    )
    how = (
        "untiled"
        if tile_size == 0
        else f"in tiles of {smallest} px" + (f" with an L-BFGS history of {HISTORY_SIZES[-1]}" if history else "")
    )
    largest = largest_fitting_size(shape, have, tile_size)
    hint = f"size={largest} fits" if largest else "no size fits"
    raise UserError(
        f"size={size} ({shape.width}x{shape.height} px) needs about {needed / 2**30:.1f} GiB {how}, more than the "
        f"{have / 2**30:.1f} GiB of {what}; {hint}"
    )
