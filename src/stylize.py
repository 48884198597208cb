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
from src.errors import UserError
from src.images import MIN_SIZE, load_tensor, save_image
from src.loggers import close_loggers
from src.module import StyleTransfer
from src.paths import resolve_input_path

INIT_KINDS = ("noise", "content", "style", "image")

# The frozen backbone is in eval mode on purpose; Lightning's tips are noise on our console.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


def validate(cfg: DictConfig) -> None:
    """Check values that the config's types cannot; name the key in every message."""
    if not isinstance(cfg.size, int) or cfg.size < MIN_SIZE:
        raise UserError(f"size={cfg.size}: must be an integer of at least {MIN_SIZE} (pixels of the long side)")
    if cfg.style_size is not None and (not isinstance(cfg.style_size, int) or cfg.style_size < MIN_SIZE):
        raise UserError(f"style_size={cfg.style_size}: must be null or an integer of at least {MIN_SIZE}")
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise UserError(f"steps={cfg.steps}: must be a positive integer")
    if not isinstance(cfg.snapshot_every, int) or cfg.snapshot_every < 0:
        raise UserError(f"snapshot_every={cfg.snapshot_every}: must be 0 (off) or a positive integer")
    for key in ("alpha", "beta", "tv_weight"):
        value = cfg[key]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserError(f"{key}={value}: must be a finite number >= 0")
    for group in ("content", "style"):
        layers = cfg.layers[group]
        if not layers:
            raise UserError(f"layers.{group} is empty: name at least one layer")
        check_layer_names(layers.keys())
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
        max_epochs=1,
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
    """Images -> backbone -> module. Inputs are read first, so a bad file fails before any model loads."""
    content = load_tensor(resolve_input_path(cfg.content.path), long_side=cfg.size, role="content")
    style = load_tensor(resolve_input_path(cfg.style.path), long_side=cfg.style_size or cfg.size, role="style")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    init = make_init_image(cfg, content, style)
    layers = [*cfg.layers.content, *cfg.layers.style]
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


def stylize(cfg: DictConfig, output_dir: str | os.PathLike) -> dict[str, Any]:
    """Run one style transfer described by `cfg`, writing its results into `output_dir`.

    Returns the metrics also written to metrics.json.
    """
    validate(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    module = build_module(cfg)
    trainer = make_trainer(cfg, output_dir, run_callbacks(cfg, output_dir))
    succeeded = False
    try:
        started = time.perf_counter()
        trainer.fit(module, train_dataloaders=steps_loader(cfg.steps))
        wall_seconds = time.perf_counter() - started
        final = module.evaluate()
        save_image(module.image, output_dir / "final.png")
        metrics = collect_metrics(module, final, trainer.global_step, wall_seconds)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log_final(trainer, module, metrics, output_dir)
        succeeded = True
    finally:
        close_loggers(trainer, succeeded)  # a W&B run is finished, with exit code 1 on failure
    return metrics


def collect_metrics(module: StyleTransfer, final: dict[str, float], steps: int, wall_seconds: float) -> dict[str, Any]:
    height, width = module.image.shape[-2:]

    def main_terms(terms: dict[str, float]) -> dict[str, float]:
        return {key: terms[f"loss/{key}"] for key in ("total", "content", "style", "tv")}

    return {
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
