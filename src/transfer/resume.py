"""Continuing an interrupted run from its folder (`resume=DIR`)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.common.errors import UserError
from src.common.paths import resolve_input_path
from src.transfer.checkpoints import checkpoint_path
from src.transfer.coarse_to_fine import LEVELS_DIR


def resumed_run(run_dir: str, device: DictConfig | None = None) -> tuple[DictConfig, Path]:
    """The config and folder of an interrupted run, to continue it to its requested steps;
    on `device` if given (the command named one: a GPU run continued on a CPU, say)."""
    folder = resolve_input_path(run_dir)
    saved = folder / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise UserError(f"resume={run_dir}: {folder} is not a run folder (no .hydra/config.yaml)")
    if not checkpoint_path(folder).is_file() and not (folder / LEVELS_DIR).is_dir():
        raise UserError(f"resume={run_dir}: {folder} has no checkpoint to continue from ({checkpoint_path(folder)})")
    cfg = OmegaConf.load(saved)
    assert isinstance(cfg, DictConfig)
    cfg.resume = None
    if device is not None:
        cfg.device = device
    return cfg, folder
