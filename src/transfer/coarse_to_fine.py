"""Coarse to fine (pyramid=factor2 | sqrt2): the coarse levels of a run, each started from the last."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from src.common.errors import Interrupted, RunStopped
from src.common.files import atomic_path
from src.common.images import (
    save_image,
)
from src.common.terms import main_terms
from src.nst.distributed import TileGroup
from src.nst.pyramid import auto_plan, describe, level_sizes, level_steps
from src.transfer.build import build_module, plan_level
from src.transfer.callbacks import loss_callbacks
from src.transfer.checkpoints import (
    StopOnSignal,
)
from src.transfer.inputs import Inputs
from src.transfer.metrics import keep_last_good
from src.transfer.module import StyleTransfer
from src.transfer.trainer import fit, trainer_settings

log = logging.getLogger(__name__)


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


PYRAMID_FILE = "pyramid.json"
LEVELS_DIR = "levels"  # each finished coarse level's result, to continue from


def coarse_to_fine(
    cfg: DictConfig,
    plan: list[tuple[int, int]],
    output_dir: Path,
    resume_from: Path | None,
    inputs: Inputs,
    group: TileGroup | None = None,
) -> tuple[StyleTransfer, list[dict[str, Any]]]:
    """Run every level but the finest, each from the previous one's result upsampled, and
    return the finest level's module (started from the last result) and what each level did.

    Each coarse level's result is kept in levels/level_<n>.pt as it ends: a run stopped during
    a coarse level continues (resume=<folder>) from the last finished one. A resume with a
    checkpoint continues the finest level from it without running the coarse ones again.
    """
    for size, _ in reversed(plan):  # every level, the finest first, is checked before the first runs
        plan_level(cfg, inputs, size)
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
                log.info(
                    "pyramid level %d of %d (%d px): finished before, continuing from it", index + 1, len(plan), size
                )
                continue
            module = build_module(cfg, size=size, coarse=image, inputs=inputs, backbone=backbone, group=group)
            backbone = module.backbone
            image, record = run_level(
                cfg,
                module,
                steps,
                output_dir,
                f"pyramid level {index + 1} of {len(plan)} ({size} px)",
                label=f"level {index + 1}/{len(plan)}",
            )
            levels.append(record)
            result_file.parent.mkdir(exist_ok=True)
            with atomic_path(result_file) as temporary:
                torch.save(image, temporary)
            saved.write_text(json.dumps(levels, indent=2))
            log.info(
                "about %s left (from this level's seconds per pixel-step)",
                time_left(record, plan[index + 1 :], time.perf_counter() - started),
            )
        saved.write_text(json.dumps(levels, indent=2))
    # On a resume no level ran: build_module loads the backbone (with the configured dtype).
    return build_module(cfg, coarse=image, inputs=inputs, backbone=backbone, group=group), levels


def time_left(record: dict[str, Any], remaining: list[tuple[int, int]], elapsed: float) -> str:
    """The remaining levels' time, at the finished level's seconds per pixel and step (larger
    levels are a little slower per pixel on a CPU: a lower bound, tiles not counted)."""
    rate = record["wall_seconds"] / max(1, record["steps"] * record["height"] * record["width"])
    aspect = record["height"] / record["width"]
    seconds = sum(rate * steps * size * size * min(aspect, 1 / aspect) for size, steps in remaining)
    return f"{seconds / 60:.1f} min ({elapsed / 60:.1f} min so far)"


def run_level(
    cfg: DictConfig, module: StyleTransfer, steps: int, output_dir: Path, name: str, label: str = ""
) -> tuple[torch.Tensor, dict[str, Any]]:
    """One coarse level: optimise `steps` steps without loggers or checkpoints; return its result."""
    stop = StopOnSignal()
    trainer = pl.Trainer(
        **trainer_settings(cfg, steps, output_dir), logger=False, callbacks=[stop, *loss_callbacks(label)]
    )
    started = time.perf_counter()
    try:
        fit(trainer, module, steps)
    except FloatingPointError as error:
        keep_last_good(module, trainer, output_dir, time.perf_counter() - started, f"{name}: {error}")
        raise RunStopped(
            f"{name}: {error}: saved {output_dir / 'last_good.png'} and metrics.json", exit_code=3
        ) from error
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
    log.info(
        "%s: %d steps in %.1f s, loss %.4g -> %.4g",
        name,
        trainer.global_step,
        seconds,
        module.initial_losses["loss/total"],
        final["loss/total"],
    )
    record = {
        "height": int(height),
        "width": int(width),
        "steps": int(trainer.global_step),
        "wall_seconds": seconds,
        "initial": main_terms(module.initial_losses),
        "final": main_terms(final),
    }
    return result, record
