"""Logger factories for the `logger` config group."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger


def wandb_logger(save_dir: str, project: str, **kwargs: Any) -> WandbLogger:
    """A W&B logger that never prompts: online with a configured key, else offline.

    The mode goes to wandb.init, not through WandbLogger(offline=...), which would set
    WANDB_MODE in the environment and leak offline mode into later jobs of a sweep.
    """
    online = bool(os.environ.get("WANDB_API_KEY")) or _has_netrc_login()
    mode = os.environ.get("WANDB_MODE") or ("online" if online else "offline")
    return WandbLogger(save_dir=save_dir, project=project, mode=mode, **kwargs)


def _has_netrc_login() -> bool:
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="ignore").read()


def close_loggers(trainer: pl.Trainer) -> None:
    """Flush every logger; a W&B run is finished so the next job of a sweep starts its own."""
    for logger in trainer.loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
