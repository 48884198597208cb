"""`resume=DIR`: continue a run in its own folder, with its own settings.

Settings given with `resume=` are applied when they cannot change what the run computes up
to where it stopped (more steps, another device, another logger, checkpoint and snapshot
intervals, an output file), and refused with one line naming them otherwise: a resumed run
with another beta would be neither the old run nor a new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.paths import resolve_input_path
from src.transfer.checkpoints import checkpoint_path
from src.transfer.coarse_to_fine import LEVELS_DIR

APPLIED_ON_RESUME = ("steps", "device", "logger", "checkpoint_every", "snapshot_every", "output")
IGNORED_ON_RESUME = ("resume", "hydra")


def run_folder(run_dir: str | os.PathLike) -> Path:
    """The folder of a run to resume, checked: it exists, was made by a run, and has a checkpoint."""
    folder = resolve_input_path(run_dir)
    if not folder.exists():
        raise UserError(f"resume={run_dir}: no such folder ({folder})")
    if not folder.is_dir():
        raise UserError(f"resume={run_dir}: {folder} is a file; give the run's folder")
    if not (folder / ".hydra" / "config.yaml").is_file():
        raise UserError(f"resume={run_dir}: {folder} is not a run folder (no .hydra/config.yaml)")
    if not checkpoint_path(folder).is_file() and not (folder / LEVELS_DIR).is_dir():
        raise UserError(f"resume={run_dir}: {folder} has no checkpoint to continue from ({checkpoint_path(folder)})")
    return folder


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resumed_run(command: DictConfig | str, overrides: list[str] | None = None) -> tuple[DictConfig, Path]:
    """The saved config of the run in `command.resume`, with the command's applicable overrides.

    `command` is the config the command composed (its `resume` names the folder); a plain
    folder name resumes with the saved settings unchanged.
    """
    run_dir = command if isinstance(command, str) else str(command.resume)
    folder = run_folder(run_dir)
    cfg = cast(DictConfig, OmegaConf.load(folder / ".hydra" / "config.yaml"))
    refused = []
    for override in overrides or []:
        key = override_key(override)
        top = key.split(".")[0]
        if top in IGNORED_ON_RESUME:
            continue
        if top in APPLIED_ON_RESUME and not isinstance(command, str):
            cfg[top] = command[top]
        else:
            refused.append(override)
    if refused:
        raise UserError(
            f"resume={run_dir}: {' '.join(refused)} would change the run; a resumed run keeps its "
            f"settings except {', '.join(APPLIED_ON_RESUME)} (start a new run for the others)"
        )
    cfg.resume = None
    check_steps_left(cfg, folder, run_dir)
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")  # a later resume continues with these settings
    return cfg, folder


def check_steps_left(cfg: DictConfig, folder: Path, run_dir: str) -> None:
    """A finished run continues only for more steps than it has."""
    metrics_file = folder / "metrics.json"
    if not (folder / "final.png").is_file() or not metrics_file.is_file():
        return
    done = int(json.loads(metrics_file.read_text()).get("steps", 0))
    if cfg.steps <= done:
        raise UserError(
            f"resume={run_dir}: the run finished its {done} steps; give steps=N with N > {done} to continue it for more"
        )
