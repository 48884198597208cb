"""stylize(cfg): one style-transfer run, from a composed config to files on disk.

Data flows one way: images -> backbone targets -> module -> outputs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict

from src.common.errors import Interrupted, RunStopped, UserError
from src.common.export import export_image
from src.common.images import (
    save_image,
)
from src.transfer.build import build_module
from src.transfer.callbacks import log_final, run_callbacks
from src.transfer.checkpoints import (
    Checkpointer,
    StopOnSignal,
    checkpoint_path,
    save_checkpoint,
)
from src.transfer.coarse_to_fine import coarse_to_fine, pyramid_plan
from src.transfer.loggers import close_loggers
from src.transfer.metrics import (
    add_levels,
    collect_metrics,
    keep_last_good,
    write_metrics,
)
from src.transfer.trainer import fit, make_trainer
from src.transfer.validate import validate

log = logging.getLogger(__name__)

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


# -- coarse to fine (pyramid=factor2 | sqrt2; src/nst/pyramid.py) -------------------------------


