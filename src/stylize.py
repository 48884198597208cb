"""stylize(cfg): one style-transfer run, from a composed config to files on disk.

Data flows one way: images -> backbone targets -> module -> outputs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from src.backbone import build_backbone, check_layer_names, deepest_layer
from src.callbacks import log_final, run_callbacks
from src.errors import Interrupted, RunStopped, UserError
from src.faults import Checkpointer, StopOnSignal, checkpoint_path, save_checkpoint
from src.images import MIN_SIZE, load_image, load_tensor, resize, save_image, size_for_long_side, to_tensor
from src.loggers import close_loggers
from src.module import StyleTransfer
from src.paths import resolve_input_path
from src.resources import check_fits, check_large_enough
import src.schema  # noqa: F401  (registers the typed config schema with Hydra)

INIT_KINDS = ("noise", "content", "style", "image")
log = logging.getLogger(__name__)

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
    if cfg.device.accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise UserError(f"device.accelerator={cfg.device.accelerator!r}: must be one of cpu, gpu, auto")
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


def make_trainer(cfg: DictConfig, output_dir: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    logger = instantiate(cfg.logger, save_dir=str(output_dir)) if cfg.logger.get("_target_") else False
    return pl.Trainer(
        accelerator=cfg.device.accelerator,
        devices=1,
        precision=cfg.device.precision,
        max_epochs=-1,  # until max_steps, also when resuming a stopped epoch
        max_steps=cfg.steps,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(output_dir),
        deterministic=cfg.device.accelerator == "cpu",
    )


def build_module(cfg: DictConfig) -> StyleTransfer:
    """Images -> backbone -> module. Inputs are read and sizes checked before any model loads."""
    content_image = load_image(resolve_input_path(cfg.content.path), role="content")
    style_image = load_image(resolve_input_path(cfg.style.path), role="style")
    if cfg.init.kind == "image":
        load_image(resolve_input_path(cfg.init.path), role="init")  # checked now, read later
    # Sizes are checked before resizing: an impossible size must not allocate anything.
    width, height = size_for_long_side(*content_image.size, cfg.size)
    style_width, style_height = size_for_long_side(*style_image.size, cfg.style_size or cfg.size)
    layers = [*cfg.layers.content, *cfg.layers.style]
    check_large_enough(height, width, layers, "content")
    check_large_enough(style_height, style_width, list(cfg.layers.style), "style")
    history = int(cfg.optimizer.get("history_size", 0))
    check_fits(height, width, layers, history, cfg.device.accelerator, cfg.size)
    check_fits(style_height, style_width, list(cfg.layers.style), 0, cfg.device.accelerator, cfg.style_size or cfg.size)
    content = to_tensor(resize(content_image, (width, height)))
    style = to_tensor(resize(style_image, (style_width, style_height)))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    init = make_init_image(cfg, content, style)
    backbone = build_backbone(
        weights=cfg.backbone.weights,
        pooling=cfg.backbone.pooling,
        weights_path=resolve_input_path(cfg.backbone.weights_path) if cfg.backbone.weights_path else None,
        last_layer=deepest_layer(layers),
    )
    return StyleTransfer(
        backbone=backbone,
        content_image=content,
        style_image=style,
        init_image=init,
        content_layers=OmegaConf.to_container(cfg.layers.content),
        style_layers=OmegaConf.to_container(cfg.layers.style),
        alpha=cfg.alpha,
        beta=cfg.beta,
        tv_weight=cfg.tv_weight,
        optimizer=instantiate(cfg.optimizer),
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

    module = build_module(cfg)
    stop = StopOnSignal()
    callbacks = [*run_callbacks(cfg, output_dir), Checkpointer(cfg.checkpoint_every, output_dir), stop, *(extra_callbacks or [])]
    trainer = make_trainer(cfg, output_dir, callbacks)
    if resume_from:
        log.info("continuing %s from %s", output_dir, resume_from)
    succeeded = False
    try:
        started = time.perf_counter()
        try:
            trainer.fit(module, train_dataloaders=steps_loader(cfg.steps), ckpt_path=resume_from)
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
        final = module.evaluate()
        save_image(module.image, output_dir / "final.png")
        metrics = collect_metrics(module, final, trainer.global_step, wall_seconds)
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
    }


def steps_loader(steps: int) -> torch.utils.data.DataLoader:
    """One dummy batch per optimiser step: the image itself is the only 'data'."""
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(steps)), batch_size=1)
