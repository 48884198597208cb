"""Checks of the values that the config's types cannot express; every message names its key."""

from __future__ import annotations

import math
import os

import torch
from omegaconf import DictConfig, OmegaConf

from src.backbone.vgg import check_layer_names
from src.common.devices import resolve_compute_dtype, target_device
from src.common.errors import UserError
from src.common.export import EXPORT_FORMATS
from src.common.images import MIN_SIZE
from src.common.paths import path_problem, resolve_input_path
from src.nst.masks import check_shape, is_shape
from src.nst.pyramid import check_steps, level_sizes
from src.transfer.coarse_to_fine import pyramid_config
from src.transfer.inputs import style_entries
from src.transfer.optimizer_check import check_optimizer

# Lightning's precision plugins: 16/bf16-mixed refuse L-BFGS's closure, 16/bf16-true would halve
# the image's precision, 64-true casts the bfloat16 backbone to float64 against its inputs.
# The image and losses are float32; device.compute_dtype=bfloat16 is the fast path.
PRECISIONS = ("32-true",)
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}


def validate(cfg: DictConfig) -> None:
    """Check values that the config's types cannot; name the key in every message."""
    if not isinstance(cfg.size, int) or cfg.size < MIN_SIZE:
        raise UserError(f"size={cfg.size}: must be an integer of at least {MIN_SIZE} (pixels of the long side)")
    if cfg.style_size is not None and (not isinstance(cfg.style_size, int) or cfg.style_size < MIN_SIZE):
        raise UserError(f"style_size={cfg.style_size}: must be null or an integer of at least {MIN_SIZE}")
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise UserError(f"steps={cfg.steps}: must be a positive integer")
    for key in ("snapshot_every", "checkpoint_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            raise UserError(f"{key}={cfg[key]}: must be 0 (off) or a positive integer")
    target_device(cfg.device.accelerator)  # a known device, and a GPU only where there is one
    if str(cfg.device.precision) not in PRECISIONS:
        raise UserError(
            f"device.precision={cfg.device.precision}: must be 32-true; for faster arithmetic use "
            "device.compute_dtype=bfloat16 (the backbone in bfloat16, the image and losses in float32)"
        )
    resolve_compute_dtype(cfg.device.compute_dtype, torch.device("cpu"))  # names the key if it is wrong
    for key in ("alpha", "beta", "tv_weight"):
        value = cfg[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserError(f"{key}={value}: must be a finite number >= 0")
    for group in ("content", "style"):
        layers = cfg.layers[group]
        if not layers:
            raise UserError(f"layers.{group} is empty: name at least one layer")
        try:
            check_layer_names(layers.keys())
        except UserError as error:
            raise UserError(f"layers.{group}: {error}") from None
        for name, weight in layers.items():
            if not isinstance(weight, (int, float)) or weight < 0:
                raise UserError(f"layers.{group}.{name}={weight}: layer weights must be numbers >= 0")
    if cfg.init.kind == "image" and (OmegaConf.is_missing(cfg.init, "path") or not cfg.init.path):
        raise UserError("init=image needs init.path=<image file>")
    validate_controls(cfg)
    check_something_to_optimise(cfg)
    check_optimizer(cfg)
    check_output_file(cfg)


def check_something_to_optimise(cfg: DictConfig) -> None:
    """A loss that is 0 whatever the image leaves nothing to optimise: the "result" would be the start."""
    content = cfg.alpha * sum(cfg.layers.content.values())
    style = cfg.beta * sum(cfg.layers.style.values())
    if content == 0 and style == 0 and cfg.tv_weight == 0:
        raise UserError(
            f"nothing to optimise: alpha={cfg.alpha} (x content layer weights), beta={cfg.beta} (x style "
            f"layer weights) and tv_weight={cfg.tv_weight} make the loss 0; give one of them a value > 0"
        )


def check_output_file(cfg: DictConfig) -> None:
    output = cfg.get("output")
    if output in (None, ""):
        return
    path = resolve_input_path(output)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise UserError(f"output={output}: must end in .png, .jpg, .jpeg, .tif or .tiff (the format follows the name)")
    if path.is_dir():
        raise UserError(f"output={output}: is a folder; give a file name such as {path / 'result.png'}")
    if not path.parent.is_dir():
        raise UserError(f"output={output}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"output={output}: cannot write into {path.parent} (permission denied)")


def validate_controls(cfg: DictConfig) -> None:
    """Colour, blends and masks, style scale and loss, pyramid, image averaging (docs/controls.md).

    The choices (color, style_loss, normalization) are typed in the schema. Configs saved before
    these keys existed (a resumed old run) get their defaults."""
    ema = cfg.get("ema", 0.0)
    if not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
        raise UserError(f"ema={ema}: must be 0 (off) or a decay in (0, 1), e.g. 0.9")
    scale = cfg.get("style_scale", 1.0)
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise UserError(f"style_scale={scale}: must be a number > 0 (1: the style image as large as the output)")
    if scale != 1.0 and cfg.style_size is not None:
        raise UserError(f"style_scale={scale} and style_size={cfg.style_size}: set one of them, not both")
    if cfg.style_size is None and round(scale * cfg.size) < MIN_SIZE:
        raise UserError(
            f"style_scale={scale}: the style image would be {round(scale * cfg.size)} px, less than {MIN_SIZE}"
        )
    entries = style_entries(cfg)
    for key, path, weight, mask in entries:
        if not path:
            raise UserError(f"{key}.path is empty: give an image file or a style preset name")
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"{key}.weight={weight}: must be a finite number >= 0")
        if mask is not None:
            if not str(mask).strip():
                raise UserError(
                    f"{key}.mask is empty: give an image file, or top, bottom, left, right (optionally :fraction)"
                )
            check_shape(mask, f"{key}.mask")
            if not is_shape(mask):
                problem = path_problem(resolve_input_path(mask))
                if problem is not None:
                    raise UserError(
                        f"{key}.mask={mask}: neither a shape (top, bottom, left, right, optionally "
                        f"with :fraction, e.g. top:0.4) nor an image file ({problem})"
                    )
    if sum(weight for _, _, weight, _ in entries) <= 0:
        raise UserError("style.weight and style.blend weights are all 0: at least one style needs a weight > 0")
    unknown = [kind for kind in cfg.get("export") or [] if kind not in EXPORT_FORMATS]
    if unknown:
        raise UserError(
            f"export={list(cfg.export)}: unknown format(s) {unknown}; choose from {', '.join(EXPORT_FORMATS)}"
        )
    tile_size = cfg.get("tile_size")
    if tile_size is not None and (not isinstance(tile_size, int) or tile_size < 0):
        raise UserError(f"tile_size={tile_size}: must be null (tiles when needed), 0 (never) or a number of pixels")
    pyramid = pyramid_config(cfg)
    if pyramid.levels != "auto" and (not isinstance(pyramid.levels, int) or pyramid.levels < 1):
        raise UserError(f"pyramid.levels={pyramid.levels}: must be auto or an integer >= 1 (1: single scale)")
    if not isinstance(pyramid.factor, (int, float)) or not 1.0 < pyramid.factor <= 4.0:
        raise UserError(f"pyramid.factor={pyramid.factor}: must be a number in (1, 4], e.g. 2 or 1.414")
    if pyramid.levels == "auto":
        return
    check_steps(
        OmegaConf.to_object(pyramid.steps) if OmegaConf.is_config(pyramid.steps) else pyramid.steps, pyramid.levels
    )
    coarsest = level_sizes(cfg.size, pyramid.levels, pyramid.factor)[0]
    if coarsest < MIN_SIZE:
        raise UserError(
            f"pyramid.levels={pyramid.levels} pyramid.factor={pyramid.factor}: the coarsest level would be "
            f"{coarsest} px, less than {MIN_SIZE}; use fewer levels or a larger size"
        )
