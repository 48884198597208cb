"""Callbacks that write what a run produces besides the logger's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from src.images import save_image


class Snapshots(pl.Callback):
    """Save the image as step_XXXXX.png every `every` optimiser steps (and at step 0)."""

    def __init__(self, every: int, directory: str | Path) -> None:
        self.every = every
        self.directory = Path(directory)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.every > 0 and trainer.global_step == 0:
            self.save(module, 0)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0:
            self.save(module, step)

    def save(self, module: pl.LightningModule, step: int) -> None:
        save_image(module.image, self.directory / f"step_{step:05d}.png")


def run_callbacks(cfg: DictConfig, output_dir: Path) -> list[pl.Callback]:
    """The callbacks every style-transfer run gets."""
    return [Snapshots(cfg.snapshot_every, output_dir)]


def log_final(trainer: pl.Trainer, module: pl.LightningModule, metrics: dict[str, Any], output_dir: Path) -> None:
    """Hand the final image and metrics to the loggers (run summary, final image)."""
    for logger in trainer.loggers:
        logger.log_metrics({f"final/{k}": v for k, v in metrics["final"].items()}, step=trainer.global_step)
