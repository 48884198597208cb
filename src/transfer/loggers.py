"""Logger factories for the `logger` config group, and what every run hands to its loggers.

Scalars (every loss component, every step) reach the loggers through
src.transfer.callbacks.LossHistory; images, the resolved config and the run summary go through the
helpers here, so that W&B and TensorBoard show the same things.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)

DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def wandb_logger(
    save_dir: str,
    project: str,
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    mode: str | None = None,
    **kwargs: Any,
) -> WandbLogger:
    """A W&B logger that never prompts and never waits on a network that is not there.

    Online when a login is configured (WANDB_API_KEY or `wandb login`) and the server answers;
    otherwise offline into <run dir>/wandb, to be uploaded later with `wandb sync`.
    `WANDB_MODE` or `logger.mode` choose explicitly. The mode goes to wandb.init, not through
    WandbLogger(offline=...), which would set WANDB_MODE in the environment and leak offline
    mode into later jobs of a sweep.

    In a sweep each job is its own run, named after the overrides that the sweep varies and
    grouped by the sweep's folder.
    """
    from src.transfer.hydra_job import current_job

    job = current_job()
    mode = mode or os.environ.get("WANDB_MODE") or choose_mode()
    if mode == "offline":
        log.info(
            "W&B: logging offline into %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`",
            save_dir,
            save_dir,
        )
    logger = WandbLogger(
        save_dir=save_dir,
        project=project,
        mode=mode,
        name=name or job.name,
        group=group or job.group,
        tags=list(tags) if tags else None,
        job_type=kwargs.pop("job_type", None) or ("sweep-job" if job.multirun else "run"),
        **kwargs,
    )
    # Lightning always passes anonymous=None, which current wandb versions warn about.
    init_args = getattr(logger, "_wandb_init", None)
    if isinstance(init_args, dict) and init_args.get("anonymous") is None:
        init_args.pop("anonymous", None)
    return logger


def choose_mode() -> str:
    """'online' with a W&B login and a reachable server, else 'offline'."""
    if not has_wandb_login():
        return "offline"
    if not server_reachable(os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST):
        log.warning("W&B: a login is configured but the server cannot be reached; logging offline")
        return "offline"
    return "online"


def has_wandb_login() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).hostname or ""
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for candidate in candidates:
        path = os.path.expanduser(candidate)
        if not os.path.isfile(path):
            continue
        try:
            return netrc.netrc(path).authenticators(host) is not None
        except (netrc.NetrcParseError, OSError):
            return False
    return False


def server_reachable(url: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to the W&B server be opened? (Behind a proxy: assume yes.)"""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme != "http" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


# -- what every run logs besides the scalars ----------------------------------------------


def log_image(logger: Logger, key: str, image: Image.Image, step: int, caption: str | None = None) -> None:
    """One image: a wandb.Image in W&B, an image summary in TensorBoard; ignored by the others."""
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({key: wandb.Image(image, caption=caption), "trainer/global_step": step})
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, np.asarray(image.convert("RGB")), global_step=step, dataformats="HWC")


def log_config(logger: Logger, config: Mapping[str, Any], text: str) -> None:
    """The full resolved config: W&B's run config; a text panel in TensorBoard."""
    if isinstance(logger, WandbLogger):
        logger.experiment.config.update(dict(config), allow_val_change=True)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_text("config", "\n".join("    " + line for line in text.splitlines()), global_step=0)


def log_summary(logger: Logger, summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> None:
    """Final metrics: W&B's run summary. TensorBoard: a summary text, and the config against the
    final/* scalars in the HPARAMS tab, so that the jobs of a sweep can be compared there."""
    if isinstance(logger, WandbLogger):
        logger.experiment.summary.update(dict(summary))
    elif isinstance(logger, TensorBoardLogger):
        lines = [f"| {key} | {value} |" for key, value in summary.items()]
        logger.experiment.add_text("summary", "\n".join(["| metric | value |", "|---|---|", *lines]))
        if config:
            from torch.utils.tensorboard.summary import hparams

            params = {
                key: value if isinstance(value, (int, float, str, bool)) else str(value)
                for key, value in flatten(config).items()
            }
            metrics = {
                key: value
                for key, value in summary.items()
                if key.startswith("final/") and isinstance(value, (int, float))
            }
            writer = logger.experiment._get_file_writer()
            for event in hparams(params, metrics):
                writer.add_summary(event)


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'final': {'total': 1}} -> {'final/total': 1}."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def close_loggers(trainer: pl.Trainer, succeeded: bool = True) -> None:
    """Flush every logger. A W&B run is finished, with exit code 1 when the run failed, so that
    the next job of a sweep starts its own run and a failed job shows as failed."""
    for logger in trainer.loggers:
        try:
            logger.finalize("success" if succeeded else "failed")
        except Exception as error:  # closing must not hide the run's own error
            log.warning("could not finalize the %s logger: %s", type(logger).__name__, error)
        if isinstance(logger, WandbLogger):
            run = getattr(logger, "_experiment", None)
            if run is not None:
                run.finish(exit_code=0 if succeeded else 1)
    try:
        import wandb

        if wandb.run is not None:
            wandb.run.finish(exit_code=0 if succeeded else 1)
    except ImportError:  # pragma: no cover
        pass
