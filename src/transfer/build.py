"""Images -> backbone -> module: the LightningModule of one run (or one pyramid level)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.backbone.vgg import VGG19Features, backbone_from_config
from src.common.devices import resolve_compute_dtype, target_device
from src.common.errors import UserError
from src.common.images import (
    resize,
    size_for_long_side,
    to_tensor,
)
from src.nst.distributed import TileGroup
from src.nst.masks import mask_tensor
from src.nst.pyramid import upsample
from src.transfer.inputs import (
    Inputs,
    load_inputs,
    make_init_image,
    prepare_styles,
    style_long_side,
)
from src.transfer.memory import check_large_enough
from src.transfer.module import Style, StyleTransfer
from src.transfer.tiled import MemoryPlan, RunShape, TiledStyleTransfer, plan_run, shared_cost_ratio

log = logging.getLogger(__name__)


def warn_if_enlarged(role: str, original: tuple[int, int], target: tuple[int, int]) -> None:
    """An image blown up more than twice has little detail for the result to keep: say so."""
    if max(target) > 2 * max(original):
        log.warning(
            "the %s image is %dx%d px and is enlarged to %dx%d px: expect a blurry result "
            "(use a larger image, or a smaller size=)",
            role,
            *original,
            *target,
        )


def build_module(
    cfg: DictConfig,
    size: int | None = None,
    init: torch.Tensor | None = None,
    inputs: Inputs | None = None,
    backbone: VGG19Features | None = None,
    coarse: torch.Tensor | None = None,
    module_class: Callable[..., StyleTransfer] = StyleTransfer,
    group: TileGroup | None = None,
    tile_size: int | None = None,
) -> StyleTransfer:
    """Images -> backbone -> module. Inputs are read and sizes checked before any model loads.

    `size` (a pyramid level's long side; default cfg.size) and `coarse` (the previous level's
    result, upsampled to start this level) serve the coarse-to-fine loop; `inputs` and
    `backbone` let it read the files and load the weights once. `init` replaces the start
    image altogether. `module_class` builds a subclass instead (a video frame's, src/video).
    A tiled module computes its tiles on the processes of `group` (device.devices=N); a
    follower process passes the leader's `tile_size`.
    """
    size = size or cfg.size
    inputs = inputs or load_inputs(cfg)
    width, height, style_sizes, layers, history, compute_dtype, plan = plan_level(cfg, inputs, size, tile_size)
    content = to_tensor(resize(inputs.content, (width, height)))
    styles = [to_tensor(resize(style.image, dims)) for style, dims in zip(inputs.styles, style_sizes)]
    styles = prepare_styles(cfg, styles, content)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if init is None:
        init = make_init_image(cfg, content, styles[0]) if coarse is None else upsample(coarse, height, width)
    if backbone is None:
        backbone = backbone_from_config(cfg.backbone, layers, compute_dtype)
    blend = None
    if len(styles) > 1 or any(style.mask is not None for style in inputs.styles):
        blend = [
            Style(
                image, style.weight, None if style.mask is None else mask_tensor(style.mask, height, width), style.name
            )
            for image, style in zip(styles, inputs.styles)
        ]
    optimizer = instantiate(cfg.optimizer)
    if plan.history_size != history:
        log.info("L-BFGS history of %d pairs (not %d): what fits in memory at %d px", plan.history_size, history, size)
        optimizer = instantiate(cfg.optimizer, history_size=plan.history_size)
    tiling: dict[str, Any] = {}
    if plan.tile_size is not None:
        why = f"shared by {group.world} processes" if group is not None else "it does not fit whole"
        log.info("%d px: the loss is computed in tiles of %d px (%s)", size, plan.tile_size, why)
        tiling = {"tile_size": plan.tile_size, "group": group}
    if tiling and module_class is not StyleTransfer:
        raise UserError(f"a {size} px run of this kind cannot be tiled; choose a smaller size")
    module = (TiledStyleTransfer if tiling else module_class)(
        **tiling,
        backbone=backbone,
        content_image=content,
        style_image=styles[0],
        init_image=init,
        content_layers=OmegaConf.to_container(cfg.layers.content),
        style_layers=OmegaConf.to_container(cfg.layers.style),
        alpha=cfg.alpha,
        beta=cfg.beta,
        tv_weight=cfg.tv_weight,
        optimizer=optimizer,
        styles=blend,
        style_loss=cfg.get("style_loss", "gram"),
        color=cfg.get("color", "none"),
        ema=float(cfg.get("ema", 0.0)),
        normalization=cfg.get("normalization", "gatys"),
    )
    if plan.fits_whole and group is not None and group.leads:
        warn_if_sharing_is_slower(module, size, group.world, cfg.device.accelerator)
    return module


def warn_if_sharing_is_slower(module: Any, size: int, devices: int, cfg_accelerator: str) -> None:
    """A run that one device takes whole may be slower in tiles on several: say so."""
    on_cpu = target_device(cfg_accelerator).type == "cpu"
    ratio = shared_cost_ratio(module.tiling, on_cpu)
    if ratio > 1:
        log.warning(
            "%d px fits whole on one device, which is faster: shared between %d processes in tiles of %d px, a "
            "step takes about %.1fx as long (the tiles' margins are computed again); device.devices=N pays off "
            "for sizes that need tiles",
            size,
            devices,
            module.tile_size,
            ratio,
        )


def plan_level(
    cfg: DictConfig, inputs: Inputs, size: int, tile_size: int | None = None, warn: bool = True
) -> tuple[int, int, list[tuple[int, int]], list[str], int, str, Any]:
    """The sizes of a run (or pyramid level) of long side `size`, checked before anything is
    allocated: large enough for the deepest layer, and a memory plan that fits (else a one-line
    error naming a size that does); `tile_size`: the plan is tiles of that size (decided by
    the leader of a run on several processes)."""
    width, height = size_for_long_side(*inputs.content.size, size)
    if size == cfg.size and warn:
        warn_if_enlarged("content", inputs.content.size, (width, height))
    style_long = style_long_side(cfg, size)
    style_sizes = [size_for_long_side(*style.image.size, style_long) for style in inputs.styles]
    layers = [*cfg.layers.content, *cfg.layers.style]
    check_large_enough(height, width, layers, "content")
    for style_width, style_height in dict.fromkeys(style_sizes):
        check_large_enough(style_height, style_width, list(cfg.layers.style), "style")
    history = int(cfg.optimizer.get("history_size", 0))
    compute_dtype = resolve_compute_dtype(cfg.device.compute_dtype, target_device(cfg.device.accelerator))
    if tile_size is not None:
        return width, height, style_sizes, layers, history, compute_dtype, MemoryPlan(tile_size, history, 0)
    plan = plan_run(
        RunShape(height, width, layers, list(cfg.layers.content), history, compute_dtype),
        cfg.device.accelerator,
        size,
        cfg.get("tile_size"),
        list(dict.fromkeys(style_sizes)),
        int(cfg.device.get("devices", 1)),
    )
    return width, height, style_sizes, layers, history, compute_dtype, plan
