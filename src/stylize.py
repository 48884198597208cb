"""stylize(cfg): one style-transfer run, from a composed config to files on disk.

Data flows one way: images -> backbone targets -> module -> outputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from src.backbone import VGG19Features, build_backbone, check_layer_names, deepest_layer, resolve_compute_dtype
from src.callbacks import log_final, loss_callbacks, run_callbacks
from src.errors import Interrupted, RunStopped, UserError
from src.faults import Checkpointer, StopOnSignal, checkpoint_path, save_checkpoint
from src.images import MIN_SIZE, load_image, load_tensor, resize, save_image, size_for_long_side, to_tensor
from src.color import COLOR_MODES, match_color, match_luminance
from src.loggers import close_loggers
from src.losses import STYLE_LOSSES
from src.masks import check_shape, is_shape, load_mask_image, mask_tensor
from src.module import Style, StyleTransfer
from src.paths import PROJECT_ROOT, resolve_input_path
from src.pyramid import auto_plan, check_steps, describe, level_sizes, level_steps, upsample
from src.resources import check_large_enough, target_device
from src.common.export import EXPORT_FORMATS, export_image
from src.transfer.tiled import TiledStyleTransfer, plan_run
import src.schema  # noqa: F401  (registers the typed config schema with Hydra)

INIT_KINDS = ("noise", "content", "style", "image")
STYLE_PRESET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
log = logging.getLogger(__name__)

# Lightning's deterministic=True (our CPU runs) turns on torch's deterministic algorithms,
# which by default also fill every new tensor with NaN, a safety net against reading
# uninitialised memory. Correct ops never do, and the fills cost 2-4 % of a step at 512 px
# (every conv output and input gradient). Determinism itself is unchanged (tested).
torch.utils.deterministic.fill_uninitialized_memory = False

# The frozen backbone is in eval mode on purpose; Lightning's tips are noise on our console.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
for _name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.trainer.connectors.checkpoint_connector"):
    logging.getLogger(_name).setLevel(logging.WARNING)


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
    if cfg.backbone.pooling not in ("max", "avg"):
        raise UserError(f"backbone.pooling={cfg.backbone.pooling!r}: must be one of max, avg")
    if cfg.backbone.weights not in ("caffe", "torchvision"):
        raise UserError(f"backbone.weights={cfg.backbone.weights!r}: must be one of caffe, torchvision")
    target_device(cfg.device.accelerator)  # a known device, and a GPU only where there is one
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
    if cfg.init.kind not in INIT_KINDS:
        raise UserError(f"init.kind={cfg.init.kind!r}: must be one of {', '.join(INIT_KINDS)}")
    if cfg.init.kind == "image" and (OmegaConf.is_missing(cfg.init, "path") or not cfg.init.path):
        raise UserError("init=image needs init.path=<image file>")
    validate_controls(cfg)


def validate_controls(cfg: DictConfig) -> None:
    """Colour, blends and masks, style scale and loss, pyramid, image averaging (docs/controls.md).

    Configs saved before these keys existed (a resumed old run) get their defaults."""
    color, style_loss, ema = cfg.get("color", "none"), cfg.get("style_loss", "gram"), cfg.get("ema", 0.0)
    if color not in COLOR_MODES:
        raise UserError(f"color={color!r}: must be one of {', '.join(COLOR_MODES)}")
    if style_loss not in STYLE_LOSSES:
        raise UserError(f"style_loss={style_loss!r}: must be one of {', '.join(STYLE_LOSSES)}")
    if not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
        raise UserError(f"ema={ema}: must be 0 (off) or a decay in (0, 1), e.g. 0.9")
    scale = cfg.get("style_scale", 1.0)
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise UserError(f"style_scale={scale}: must be a number > 0 (1: the style image as large as the output)")
    if scale != 1.0 and cfg.style_size is not None:
        raise UserError(f"style_scale={scale} and style_size={cfg.style_size}: set one of them, not both")
    if cfg.style_size is None and round(scale * cfg.size) < MIN_SIZE:
        raise UserError(f"style_scale={scale}: the style image would be {round(scale * cfg.size)} px, less than {MIN_SIZE}")
    entries = style_entries(cfg)
    for key, path, weight, mask in entries:
        if not path:
            raise UserError(f"{key}.path is empty: give an image file or a style preset name")
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"{key}.weight={weight}: must be a finite number >= 0")
        if mask is not None:
            if not str(mask).strip():
                raise UserError(f"{key}.mask is empty: give an image file, or top, bottom, left, right (optionally :fraction)")
            check_shape(mask, f"{key}.mask")
    if sum(weight for _, _, weight, _ in entries) <= 0:
        raise UserError("style.weight and style.blend weights are all 0: at least one style needs a weight > 0")
    unknown = [kind for kind in cfg.get("export") or [] if kind not in EXPORT_FORMATS]
    if unknown:
        raise UserError(f"export={list(cfg.export)}: unknown format(s) {unknown}; choose from {', '.join(EXPORT_FORMATS)}")
    tile_size = cfg.get("tile_size")
    if tile_size is not None and (not isinstance(tile_size, int) or tile_size < 0):
        raise UserError(f"tile_size={tile_size}: must be null (tiles when needed), 0 (never) or a number of pixels")
    pyramid = pyramid_config(cfg)
    if pyramid.levels == "auto":
        return
    if not isinstance(pyramid.levels, int) or pyramid.levels < 1:
        raise UserError(f"pyramid.levels={pyramid.levels}: must be an integer >= 1 (1: single scale)")
    if not isinstance(pyramid.factor, (int, float)) or not 1.0 < pyramid.factor <= 4.0:
        raise UserError(f"pyramid.factor={pyramid.factor}: must be a number in (1, 4], e.g. 2 or 1.414")
    check_steps(OmegaConf.to_object(pyramid.steps) if OmegaConf.is_config(pyramid.steps) else pyramid.steps, pyramid.levels)
    coarsest = level_sizes(cfg.size, pyramid.levels, pyramid.factor)[0]
    if coarsest < MIN_SIZE:
        raise UserError(f"pyramid.levels={pyramid.levels} pyramid.factor={pyramid.factor}: the coarsest level would be "
                        f"{coarsest} px, less than {MIN_SIZE}; use fewer levels or a larger size")


def pyramid_config(cfg: DictConfig) -> DictConfig:
    return cfg.get("pyramid") or OmegaConf.create({"levels": 1, "factor": 2.0, "steps": None})


def pyramid_plan(cfg: DictConfig) -> list[tuple[int, int]]:
    """(long side, steps) of each level, coarsest first; one level without a pyramid."""
    pyramid = pyramid_config(cfg)
    if pyramid.levels == "auto":
        return auto_plan(cfg.size, cfg.steps)
    steps = OmegaConf.to_object(pyramid.steps) if OmegaConf.is_config(pyramid.steps) else pyramid.steps
    sizes = level_sizes(cfg.size, pyramid.levels, pyramid.factor)
    return list(zip(sizes, level_steps(cfg.steps, pyramid.levels, steps)))


def make_init_image(cfg: DictConfig, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    kind = cfg.init.kind
    if kind == "content":
        return content.clone()
    if kind == "noise":
        # White noise, uniform in [0, 1], from its own seeded generator (Gatys et al.).
        generator = torch.Generator().manual_seed(int(cfg.seed))
        return torch.rand(content.shape, generator=generator)
    height, width = content.shape[-2:]
    if kind == "style":
        return torch.nn.functional.interpolate(style, size=(height, width), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return load_tensor(resolve_input_path(cfg.init.path), size=(width, height), role="init")


def trainer_settings(cfg: DictConfig, steps: int, output_dir: Path) -> dict[str, Any]:
    """What every Trainer of a run shares: `steps` steps on one device, nothing else."""
    device = target_device(cfg.device.accelerator)
    on_cuda = device.type == "cuda"
    return dict(
        accelerator=device.type,  # what `auto` means here, which Lightning's would not (it picks MPS first)
        devices=1,
        precision=cfg.device.precision,
        max_epochs=-1,  # until max_steps, also when resuming a stopped epoch
        max_steps=steps,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir),
        deterministic=not on_cuda,  # bit-for-bit on the CPU (tested); free on the GPU
        benchmark=on_cuda,  # the image's size is fixed: let cuDNN pick its fastest convolutions
    )


def make_trainer(cfg: DictConfig, output_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    logger = instantiate(cfg.logger, save_dir=str(output_dir)) if cfg.logger.get("_target_") else False
    return pl.Trainer(**trainer_settings(cfg, cfg.steps, output_dir), logger=logger, callbacks=callbacks, log_every_n_steps=1)


def fit(trainer: pl.Trainer, module: StyleTransfer, steps: int, resume_from: Path | None = None) -> None:
    """trainer.fit, leaving the module on the run's device: Lightning's teardown moves it to
    the CPU, also after an error, where the final evaluation would be slow on a big image."""
    try:
        trainer.fit(module, train_dataloaders=steps_loader(steps), ckpt_path=resume_from)
    except torch.OutOfMemoryError as error:  # the GPU's: the estimate (src/resources.py) let it start
        height, width = module.image.shape[-2:]  # (the module is not used again: left on the CPU)
        raise UserError(f"a {width}x{height} px run ran out of GPU memory; choose a smaller size") from error
    except BaseException:
        module.to(trainer.strategy.root_device)  # a NaN's last_good.png is evaluated next
        raise
    module.to(trainer.strategy.root_device)


@dataclass
class StyleInput:
    """One style of the run, read from disk: the image, its share of beta, its mask, its name."""

    image: Image.Image
    weight: float
    mask: str | Image.Image | None
    name: str


@dataclass
class Inputs:
    content: Image.Image
    styles: list[StyleInput]


def style_preset_path(name: str) -> str | None:
    """The image of a style preset (conf/style/<name>.yaml), so that blends can name presets."""
    if not STYLE_PRESET_NAME.match(name):
        return None
    preset = PROJECT_ROOT / "conf" / "style" / f"{name}.yaml"
    if not preset.is_file():
        return None
    return str(OmegaConf.load(preset).path)


def resolve_style_path(path: str) -> Path:
    """A style path: a file (relative to the launch directory) or a style preset's name."""
    resolved = resolve_input_path(path)
    if not resolved.exists():
        preset = style_preset_path(str(path))
        if preset is not None:
            return Path(preset)
    return resolved


def style_entries(cfg: DictConfig) -> list[tuple[str, str, float, str | None]]:
    """(key, path, weight, mask) of every style: style.path, then each of style.blend."""
    entries = [("style", cfg.style.path, float(cfg.style.get("weight", 1.0)), cfg.style.get("mask"))]
    for index, entry in enumerate(cfg.style.get("blend") or []):
        entries.append((f"style.blend.{index}", entry.path, float(entry.get("weight", 1.0)), entry.get("mask")))
    return entries


def load_inputs(cfg: DictConfig) -> Inputs:
    """Read and check every input file (content, styles, masks, init) before any model loads."""
    content = load_image(resolve_input_path(cfg.content.path), role="content")
    entries = style_entries(cfg)
    total = sum(weight for _, _, weight, _ in entries)
    styles, names = [], []
    for key, path, weight, mask in entries:
        image = load_image(resolve_style_path(path), role="style" if key == "style" else key)
        if mask is not None and not is_shape(mask):
            mask = load_mask_image(resolve_input_path(mask), role=f"{key}.mask")
        name = Path(str(path)).stem or key
        if name in names:
            name = f"{name}_{len(names)}"
        names.append(name)
        styles.append(StyleInput(image, weight / total, mask, name))
    if cfg.init.kind == "image":
        load_image(resolve_input_path(cfg.init.path), role="init")  # checked now, read later
    return Inputs(content, styles)


def style_long_side(cfg: DictConfig, size: int) -> int:
    """The style image's long side for an output of long side `size` (a pyramid level)."""
    full = cfg.style_size or (cfg.size if cfg.get("style_scale", 1.0) == 1.0 else max(1, round(cfg.style_scale * cfg.size)))
    return full if size == cfg.size else max(1, round(full * size / cfg.size))


def prepare_styles(cfg: DictConfig, styles: list[torch.Tensor], content: torch.Tensor) -> list[torch.Tensor]:
    """color=match recolours each style to the content's colours; color=luminance makes it grey,
    with the content's mean and spread of luminance."""
    color = cfg.get("color", "none")
    if color == "match":
        return [match_color(style, content) for style in styles]
    if color == "luminance":
        return [match_luminance(style, content) for style in styles]
    return styles


def build_module(
    cfg: DictConfig,
    size: int | None = None,
    init: torch.Tensor | None = None,
    inputs: Inputs | None = None,
    backbone: VGG19Features | None = None,
    coarse: torch.Tensor | None = None,
) -> StyleTransfer:
    """Images -> backbone -> module. Inputs are read and sizes checked before any model loads.

    `size` (a pyramid level's long side; default cfg.size) and `coarse` (the previous level's
    result, upsampled to start this level) serve the coarse-to-fine loop; `inputs` and
    `backbone` let it read the files and load the weights once. `init` replaces the start
    image altogether.
    """
    size = size or cfg.size
    inputs = inputs or load_inputs(cfg)
    # Sizes are checked before resizing: an impossible size must not allocate anything.
    width, height = size_for_long_side(*inputs.content.size, size)
    style_long = style_long_side(cfg, size)
    style_sizes = [size_for_long_side(*style.image.size, style_long) for style in inputs.styles]
    layers = [*cfg.layers.content, *cfg.layers.style]
    check_large_enough(height, width, layers, "content")
    for style_width, style_height in dict.fromkeys(style_sizes):
        check_large_enough(style_height, style_width, list(cfg.layers.style), "style")
    history = int(cfg.optimizer.get("history_size", 0))
    compute_dtype = resolve_compute_dtype(cfg.device.compute_dtype, target_device(cfg.device.accelerator))
    plan = plan_run(height, width, layers, list(cfg.layers.content), history, cfg.device.accelerator, size,
                    compute_dtype, cfg.get("tile_size"), list(dict.fromkeys(style_sizes)))
    content = to_tensor(resize(inputs.content, (width, height)))
    styles = [to_tensor(resize(style.image, dims)) for style, dims in zip(inputs.styles, style_sizes)]
    styles = prepare_styles(cfg, styles, content)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if init is None:
        init = make_init_image(cfg, content, styles[0]) if coarse is None else upsample(coarse, height, width)
    if backbone is None:
        backbone = build_backbone(
            weights=cfg.backbone.weights,
            pooling=cfg.backbone.pooling,
            weights_path=resolve_input_path(cfg.backbone.weights_path) if cfg.backbone.weights_path else None,
            last_layer=deepest_layer(layers),
            compute_dtype=compute_dtype,
            channels_last=cfg.backbone.channels_last,
        )
    blend = None
    if len(styles) > 1 or any(style.mask is not None for style in inputs.styles):
        blend = [Style(image, style.weight, None if style.mask is None else mask_tensor(style.mask, height, width), style.name)
                 for image, style in zip(styles, inputs.styles)]
    optimizer = instantiate(cfg.optimizer)
    if plan.history_size != history:
        log.info("L-BFGS history of %d pairs (not %d): what fits in memory at %d px", plan.history_size, history, size)
        optimizer = instantiate(cfg.optimizer, history_size=plan.history_size)
    tiling: dict[str, Any] = {}
    if plan.tile_size is not None:
        log.info("%d px: the loss is computed in tiles of %d px (it does not fit whole)", size, plan.tile_size)
        tiling = {"tile_size": plan.tile_size}
    return (TiledStyleTransfer if tiling else StyleTransfer)(
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
    )


def check_output_dir(output_dir: Path) -> Path | None:
    """Never overwrite a finished run; return the checkpoint to continue from, if any."""
    if (output_dir / "final.png").exists():
        raise UserError(f"{output_dir} already holds a finished run (final.png); refusing to overwrite it")
    checkpoint = checkpoint_path(output_dir)
    return checkpoint if checkpoint.is_file() else None


def stylize(cfg: DictConfig, output_dir: str | os.PathLike, extra_callbacks: list[pl.Callback] | None = None) -> dict[str, Any]:
    """Run one style transfer described by `cfg`, writing its results into `output_dir`.

    If `output_dir` holds a checkpoint of an unfinished run (a resume, or a requeued cluster
    job), the run continues from it. Returns the metrics also written to metrics.json.
    """
    validate(cfg)
    output_dir = Path(output_dir)
    resume_from = check_output_dir(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    plan = pyramid_plan(cfg)
    if plan[-1][1] != cfg.steps:  # pyramid=auto: `steps` are the coarsest level's
        with open_dict(cfg):
            cfg.steps = plan[-1][1]
    levels: list[dict[str, Any]] = []
    if len(plan) == 1:
        module = build_module(cfg)
    else:
        module, levels = coarse_to_fine(cfg, plan, output_dir, resume_from)
    stop = StopOnSignal()
    callbacks = [*run_callbacks(cfg, output_dir), Checkpointer(cfg.checkpoint_every, output_dir), stop, *(extra_callbacks or [])]
    trainer = make_trainer(cfg, output_dir, callbacks)
    if resume_from:
        log.info("continuing %s from %s", output_dir, resume_from)
    succeeded = False
    try:
        started = time.perf_counter()
        try:
            fit(trainer, module, cfg.steps, resume_from)
        except FloatingPointError as error:
            keep_last_good(module, trainer, output_dir, time.perf_counter() - started, str(error))
            raise RunStopped(f"{error}: saved {output_dir / 'last_good.png'} and metrics.json", exit_code=3) from error
        wall_seconds = time.perf_counter() - started
        if stop.received is not None:
            save_checkpoint(trainer, output_dir)
            save_image(module.image, output_dir / "interrupted.png")
            metrics = collect_metrics(module, module.evaluate(), trainer.global_step, wall_seconds, status="interrupted")
            write_metrics(output_dir, metrics)
            raise Interrupted(
                f"stopped by {stop.signal_name} after step {trainer.global_step} of {cfg.steps}; saved "
                f"interrupted.png, metrics.json and {checkpoint_path(output_dir)}; continue with resume={output_dir}",
                exit_code=128 + stop.received,
            )
        if module.ema:
            with torch.no_grad():
                module.image.copy_(module.output_image())  # the averaged image is the result
        final = module.evaluate()
        save_image(module.image, output_dir / "final.png")
        export_image(module.image, output_dir, list(cfg.get("export") or []))
        metrics = collect_metrics(module, final, trainer.global_step, wall_seconds)
        if levels:
            add_levels(metrics, levels, module, trainer.global_step, wall_seconds, final)
        write_metrics(output_dir, metrics)
        log_final(trainer, module, metrics, output_dir)
        succeeded = True
    finally:
        close_loggers(trainer, succeeded)  # a W&B run is finished, with exit code 1 on failure
    return metrics


def keep_last_good(module: StyleTransfer, trainer: pl.Trainer, output_dir: Path, wall_seconds: float, error: str) -> None:
    """After a NaN/Inf: put back the last image with a finite loss and save it with its metrics."""
    with torch.no_grad():
        module.image.copy_(module.last_good_image)
    save_image(module.image, output_dir / "last_good.png")
    metrics = collect_metrics(module, module.evaluate(), module.last_good_step, wall_seconds, status="failed")
    metrics["error"] = error
    write_metrics(output_dir, metrics)


def write_metrics(output_dir: Path, metrics: dict[str, Any]) -> None:
    temporary = output_dir / "metrics.json.tmp"
    temporary.write_text(json.dumps(metrics, indent=2))
    os.replace(temporary, output_dir / "metrics.json")


def collect_metrics(module: StyleTransfer, final: dict[str, float], steps: int, wall_seconds: float, status: str = "finished") -> dict[str, Any]:
    height, width = module.image.shape[-2:]

    def main_terms(terms: dict[str, float]) -> dict[str, float]:
        return {key: terms[f"loss/{key}"] for key in ("total", "content", "style", "tv")}

    return {
        "status": status,
        "initial": main_terms(module.initial_losses),
        "final": main_terms(final),
        "final_style_layers": {k.removeprefix("loss/style/"): v for k, v in final.items() if k.startswith("loss/style/")},
        "steps": int(steps),
        "wall_seconds": wall_seconds,
        "seconds_per_step": wall_seconds / max(1, steps),
        "height": int(height),
        "width": int(width),
        "device": str(module.device),
        "compute_dtype": str(module.backbone.compute_dtype).removeprefix("torch."),
        **({"tiling": module.tiling_summary()} if isinstance(module, TiledStyleTransfer) else {}),
        # Several styles: each one's share of the final style term (they sum to final.style).
        **({"final_styles": {k.removeprefix("loss/blend/"): v for k, v in final.items() if k.startswith("loss/blend/")}}
           if any(k.startswith("loss/blend/") for k in final) else {}),
    }


def steps_loader(steps: int) -> torch.utils.data.DataLoader:
    """One dummy batch per optimiser step: the image itself is the only 'data'."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(steps)), batch_size=1)


# -- coarse to fine (pyramid=factor2 | sqrt2; src/pyramid.py) -------------------------------

PYRAMID_FILE = "pyramid.json"
LEVELS_DIR = "levels"  # each finished coarse level's result, to continue from


def coarse_to_fine(cfg: DictConfig, plan: list[tuple[int, int]], output_dir: Path,
                   resume_from: Path | None) -> tuple[StyleTransfer, list[dict[str, Any]]]:
    """Run every level but the finest, each from the previous one's result upsampled, and
    return the finest level's module (started from the last result) and what each level did.

    Each coarse level's result is kept in levels/level_<n>.pt as it ends: a run stopped during
    a coarse level continues (resume=<folder>) from the last finished one. A resume with a
    checkpoint continues the finest level from it without running the coarse ones again.
    """
    inputs = load_inputs(cfg)
    backbone = None
    levels: list[dict[str, Any]] = []
    image = None
    saved = output_dir / PYRAMID_FILE
    if resume_from is not None:
        levels = json.loads(saved.read_text()) if saved.is_file() else []
    else:
        log.info("coarse to fine: %s", describe(*zip(*plan)))
        finished = json.loads(saved.read_text()) if saved.is_file() else []
        started = time.perf_counter()
        for index, (size, steps) in enumerate(plan[:-1]):
            result_file = output_dir / LEVELS_DIR / f"level_{index + 1}.pt"
            if result_file.is_file() and index < len(finished):
                image = torch.load(result_file, weights_only=True)
                levels.append(finished[index])
                log.info("pyramid level %d of %d (%d px): finished before, continuing from it", index + 1, len(plan), size)
                continue
            module = build_module(cfg, size=size, coarse=image, inputs=inputs, backbone=backbone)
            backbone = module.backbone
            image, record = run_level(cfg, module, steps, output_dir, f"pyramid level {index + 1} of {len(plan)} ({size} px)")
            levels.append(record)
            result_file.parent.mkdir(exist_ok=True)
            torch.save(image, result_file.with_suffix(".tmp"))
            result_file.with_suffix(".tmp").replace(result_file)
            saved.write_text(json.dumps(levels, indent=2))
            log.info("about %s left (from this level's seconds per pixel-step)",
                     time_left(record, plan[index + 1:], time.perf_counter() - started))
        saved.write_text(json.dumps(levels, indent=2))
    # On a resume no level ran: build_module loads the backbone (with the configured dtype).
    return build_module(cfg, coarse=image, inputs=inputs, backbone=backbone), levels


def time_left(record: dict[str, Any], remaining: list[tuple[int, int]], elapsed: float) -> str:
    """The remaining levels' time, at the finished level's seconds per pixel and step (larger
    levels are a little slower per pixel on a CPU: a lower bound, tiles not counted)."""
    rate = record["wall_seconds"] / max(1, record["steps"] * record["height"] * record["width"])
    aspect = record["height"] / record["width"]
    seconds = sum(rate * steps * size * size * min(aspect, 1 / aspect) for size, steps in remaining)
    return f"{seconds / 60:.1f} min ({elapsed / 60:.1f} min so far)"


def run_level(cfg: DictConfig, module: StyleTransfer, steps: int, output_dir: Path, name: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """One coarse level: optimise `steps` steps without loggers or checkpoints; return its result."""
    stop = StopOnSignal()
    trainer = pl.Trainer(**trainer_settings(cfg, steps, output_dir), logger=False, callbacks=[stop, *loss_callbacks()])
    started = time.perf_counter()
    try:
        fit(trainer, module, steps)
    except FloatingPointError as error:
        keep_last_good(module, trainer, output_dir, time.perf_counter() - started, f"{name}: {error}")
        raise RunStopped(f"{name}: {error}: saved {output_dir / 'last_good.png'} and metrics.json", exit_code=3) from error
    seconds = time.perf_counter() - started
    result = module.output_image().detach().cpu().clone()
    if stop.received is not None:
        save_image(result, output_dir / "interrupted.png")
        raise Interrupted(
            f"stopped by {stop.signal_name} during {name}, before the finest level; saved interrupted.png. "
            f"Finished levels are kept: continue with resume={output_dir}",
            exit_code=128 + stop.received,
        )
    final = module.evaluate_image(result)
    height, width = result.shape[-2:]
    log.info("%s: %d steps in %.1f s, loss %.4g -> %.4g", name, trainer.global_step, seconds,
             module.initial_losses["loss/total"], final["loss/total"])
    record = {"height": int(height), "width": int(width), "steps": int(trainer.global_step), "wall_seconds": seconds,
              "initial": {k: module.initial_losses[f"loss/{k}"] for k in ("total", "content", "style", "tv")},
              "final": {k: final[f"loss/{k}"] for k in ("total", "content", "style", "tv")}}
    return result, record


def add_levels(metrics: dict[str, Any], levels: list[dict[str, Any]], module: StyleTransfer, steps: int,
               wall_seconds: float, final: dict[str, float]) -> None:
    """A pyramid run's metrics: `initial` is the first level's start, `wall_seconds` covers every
    level (`seconds_per_step` stays the finest level's), `pyramid` lists the levels."""
    height, width = module.image.shape[-2:]
    finest = {"height": int(height), "width": int(width), "steps": int(steps), "wall_seconds": wall_seconds,
              "initial": metrics["initial"], "final": metrics["final"]}
    metrics["initial"] = dict(levels[0]["initial"])
    metrics["wall_seconds"] = wall_seconds + sum(level["wall_seconds"] for level in levels)
    metrics["pyramid"] = [*levels, finest]
