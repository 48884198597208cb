"""stylize(cfg): one style-transfer run, from a composed config to files on disk.

Data flows one way: images -> backbone targets -> module -> outputs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict

from src.common.errors import Interrupted, RunStopped, UserError
from src.common.export import export_image
from src.common.images import save_image, to_pil
from src.common.paths import resolve_input_path
from src.nst.distributed import PeerLost, TileGroup
from src.transfer.build import build_module, plan_level
from src.transfer.callbacks import RunClock, log_final, run_callbacks
from src.transfer.checkpoints import (
    Checkpointer,
    StopOnSignal,
    checkpoint_path,
    save_checkpoint,
)
from src.transfer.coarse_to_fine import LEVELS_DIR, coarse_to_fine, pyramid_plan
from src.transfer.distributed import check_devices, start_team
from src.transfer.inputs import Inputs, load_inputs
from src.transfer.loggers import close_loggers
from src.transfer.metrics import (
    add_levels,
    collect_metrics,
    keep_last_good,
    write_metrics,
)
from src.transfer.trainer import fit, make_trainer
from src.transfer.validate import OUTPUT_FORMATS, validate

log = logging.getLogger(__name__)
FILE_ONLY = {"file_only": True}  # for the run's log file only (src/cli/app.py)


def check_output_dir(output_dir: Path, steps: int, resuming: bool = False) -> Path | None:
    """Never overwrite a finished run, unless resuming it for more steps (resume=DIR steps=N);
    return the checkpoint to continue from, if any."""
    checkpoint = checkpoint_path(output_dir)
    if (output_dir / "final.png").exists():
        if not resuming:
            raise UserError(f"{output_dir} already holds a finished run (final.png); refusing to overwrite it")
        metrics = output_dir / "metrics.json"
        done = json.loads(metrics.read_text()).get("steps", steps) if metrics.is_file() else steps
        if not checkpoint.is_file() or steps <= done:
            raise UserError(f"{output_dir} already holds a finished run (final.png); refusing to overwrite it")
    return checkpoint if checkpoint.is_file() else None


def export_result(image: torch.Tensor, output: str) -> Path:
    """The result also written to `output=FILE`, in the format its name says."""
    path = resolve_input_path(output)
    fmt = OUTPUT_FORMATS[path.suffix.lower()]
    temporary = path.with_name(f".{path.name}.tmp")
    to_pil(image).save(temporary, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    os.replace(temporary, path)
    return path


def how_to_continue(output_dir: Path) -> str:
    saved = checkpoint_path(output_dir).is_file() or (output_dir / LEVELS_DIR).is_dir()
    return f"continue with resume={output_dir} (from its last checkpoint)" if saved else "nothing was saved yet"


def stylize(
    cfg: DictConfig,
    output_dir: str | os.PathLike,
    extra_callbacks: list[pl.Callback] | None = None,
    resuming: bool = False,
) -> dict[str, Any]:
    """Run one style transfer described by `cfg`, writing its results into `output_dir`.

    If `output_dir` holds a checkpoint of an unfinished run (a resume, or a requeued cluster
    job), the run continues from it. Returns the metrics also written to metrics.json.
    """
    validate(cfg)
    devices = check_devices(cfg)
    output_dir = Path(output_dir)
    resume_from = check_output_dir(output_dir, cfg.steps, resuming)
    inputs = load_inputs(cfg)
    plan_level(cfg, inputs, cfg.size, warn=False)  # a size that does not fit is refused before anything starts
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "%s: %s in the style of %s, %d px, %d steps",
        "continuing" if resume_from else "starting",
        cfg.content.path,
        cfg.style.path,
        cfg.size,
        cfg.steps,
        extra=FILE_ONLY,
    )
    team = start_team(cfg, devices) if devices > 1 else None
    try:
        return run_style_transfer(
            cfg, output_dir, inputs, resume_from, extra_callbacks, None if team is None else team.group
        )
    except PeerLost as error:
        raise RunStopped(f"{error}: {how_to_continue(output_dir)}", exit_code=1) from error
    except KeyboardInterrupt as error:  # outside the optimisation (which saves and stops): between levels
        raise Interrupted(f"interrupted: {how_to_continue(output_dir)}", exit_code=130) from error
    finally:
        if team is not None:
            team.close()


def run_style_transfer(
    cfg: DictConfig,
    output_dir: Path,
    inputs: Inputs,
    resume_from: Path | None,
    extra_callbacks: list[pl.Callback] | None,
    group: TileGroup | None,
) -> dict[str, Any]:
    """The run itself, on this process (and the followers in `group`, which compute tiles)."""
    plan = pyramid_plan(cfg)
    if plan[-1][1] != cfg.steps:  # pyramid=auto: `steps` are the coarsest level's
        with open_dict(cfg):
            cfg.steps = plan[-1][1]
    levels: list[dict[str, Any]] = []
    if len(plan) == 1:
        module = build_module(cfg, inputs=inputs, group=group)
    else:
        module, levels = coarse_to_fine(cfg, plan, output_dir, resume_from, inputs, group)
    stop = StopOnSignal()
    clock = RunClock()  # the run's seconds, across interruptions and resumes
    label = f"level {len(plan)}/{len(plan)}" if len(plan) > 1 else ""
    callbacks = [
        *run_callbacks(cfg, output_dir, label),
        Checkpointer(cfg.checkpoint_every, output_dir),
        stop,
        clock,
        *(extra_callbacks or []),
    ]
    trainer = make_trainer(cfg, output_dir, callbacks)
    if resume_from:
        log.info("continuing %s from %s", output_dir, resume_from)
    succeeded = False
    try:
        try:
            fit(trainer, module, cfg.steps, resume_from)
        except FloatingPointError as error:
            keep_last_good(module, trainer, output_dir, clock.seconds(), str(error))
            raise RunStopped(f"{error}: saved {output_dir / 'last_good.png'} and metrics.json", exit_code=3) from error
        wall_seconds = clock.seconds()
        if stop.received is not None:
            now = module.evaluate()
            if not module.initial_losses:  # stopped before the first step: the image is the initial one
                module.initial_losses = now
            save_checkpoint(trainer, output_dir)
            save_image(module.image, output_dir / "interrupted.png")
            metrics = collect_metrics(module, now, trainer.global_step, wall_seconds, status="interrupted")
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
        if cfg.get("output"):
            metrics["output"] = str(export_result(module.image, cfg.output))
        write_metrics(output_dir, metrics)
        log_final(trainer, module, metrics, output_dir)
        if cfg.checkpoint_every > 0:
            save_checkpoint(trainer, output_dir)  # so that `resume=DIR steps=N` can continue the finished run
        extra = f" and {metrics['output']}" if "output" in metrics else ""
        metrics["result_line"] = (
            f"result: {output_dir / 'final.png'}{extra} ({metrics['steps']} steps, "
            f"{metrics['wall_seconds']:.0f} s; loss.png, metrics.json, run.log in {output_dir})"
        )
        log.info("%s", metrics["result_line"], extra=FILE_ONLY)  # the command prints it
        succeeded = True
    finally:
        close_loggers(trainer, succeeded)  # a W&B run is finished, with exit code 1 on failure
    return metrics


# -- coarse to fine (pyramid=factor2 | sqrt2; src/nst/pyramid.py) -------------------------------
